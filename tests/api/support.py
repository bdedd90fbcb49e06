"""Shared by the service and SDK tests: settings for a loopback test server."""

from __future__ import annotations

from pathlib import Path

from wanflash.config import Settings

API_KEY = "test-key"
FAKE = "tests.sdk.fast_pipeline:factory"  # vectorised FakePipeline: same contract, fast at 720p


def make_settings(data_dir: Path, **kw: object) -> Settings:
    base: dict[str, object] = dict(data_dir=data_dir, api_keys=API_KEY, executor="inprocess",
                                   allow_loopback_fetch=True, heartbeat_seconds=0.5)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]

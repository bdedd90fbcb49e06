"""Output records for store tests: a complete :class:`OutputRecord` with only what a test cares about set."""

from __future__ import annotations

from typing import Any

from wanflash.jobs.model import OutputRecord
from wanflash.jobs.source import OutboxMessage, TaskRecord


def output(video_uuid: str = "v", *, seed: int = 1, key: str = "outputs/x/0.mp4", **kw: Any) -> OutputRecord:
    facts: dict[str, Any] = {"format": "MP4", "width": 64, "height": 48, "frames": 16, "fps": 16.0,
                             "duration": 1.0, "audio": False, "size_bytes": 1000}
    return OutputRecord(video_uuid=video_uuid, seed=seed, key=key, **{**facts, **kw})


def no_webhooks(record: TaskRecord) -> list[OutboxMessage]:
    """The outbox renderer of a store test that checks no webhooks (a required constructor argument)."""
    return []

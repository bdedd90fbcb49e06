"""Fixtures for the real-SDK tests: one loopback server (subprocess executor, fast fake
pipeline), the two Python SDKs installed side by side in isolated directories (both install
the import name ``runware``, so they cannot share one site-packages), and media assets."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.support import make_settings
from wanflash.testing import LiveServer, live_server

HERE = Path(__file__).parent
SDK_CACHE = Path(sys.prefix) / "wanflash-test-sdks"


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("sdk") / "data", executor="subprocess")
    with live_server(settings, pipeline_factory="tests.sdk.fast_pipeline:factory") as s:
        yield s


def isolated_sdk(spec: str) -> Path:
    """``pip install --no-deps --target`` once per venv; the SDKs' own deps are in the venv."""
    target = SDK_CACHE / spec.replace("==", "-")
    if (target / ".complete").is_file():
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), spec],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"could not install {spec}: {proc.stderr[-2000:]}")
        pytest.skip(f"could not install {spec} (offline?): {proc.stderr[-300:]}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / ".complete").touch()
    return target


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("assets")
    img = Image.new("RGB", (640, 360))
    img.putdata([(x % 256, y % 256, 128) for y in range(360) for x in range(640)])
    img.save(d / "frame.png")
    rate, seconds = 16000, 3
    with wave.open(str(d / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(rate * seconds)))
    return {"image": d / "frame.png", "audio": d / "tone.wav"}


def run_client(argv: list[str], job: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
               cwd: Path | None = None, timeout: float = 240) -> dict[str, Any]:
    """Run one client process; it prints ``RESULT <json>`` as its last word."""
    cmd = argv + ([json.dumps(job)] if job is not None else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"client failed (rc={proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])  # type: ignore[no-any-return]


def download_and_probe(url: str, dest: Path) -> Any:
    from wanflash.media.probe import probe_file

    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    assert r.headers["content-type"] == "video/mp4"
    dest.write_bytes(r.content)
    return probe_file(dest)

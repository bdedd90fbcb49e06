"""The official @runware/sdk-js 1.3.2 (pinned in tests/sdk/js/package-lock.json), run with node."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.api.support import API_KEY
from tests.sdk.conftest import HERE, download_and_probe, run_client
from wanflash.testing import LiveServer

JS = HERE / "js"


@pytest.fixture(scope="session")
def node_project() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        if os.environ.get("CI"):
            pytest.fail("node/npm not installed")
        pytest.skip("node/npm not installed")
    if not (JS / "node_modules" / "@runware" / "sdk-js").is_dir():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"npm ci failed: {proc.stderr[-2000:]}")
            pytest.skip(f"npm ci failed (offline?): {proc.stderr[-300:]}")
    return JS


def test_sdk_js(node_project: Path, sdk_server: LiveServer, assets: dict[str, Path], tmp_path: Path) -> None:
    tasks = [
        {"model": "alibaba:wan@2.6-flash", "positivePrompt": "a slow dolly-in on a red cube", "duration": 2,
         "resolution": "720p", "numberResults": 1, "includeCost": True,
         "inputs": {"frameImages": [{"image": "$IMAGE", "frame": "first"}]},
         "providerSettings": {"alibaba": {"audio": False}}},
        {"model": "alibaba:wan@2.6-flash", "positivePrompt": "two takes", "duration": 2, "width": 960,
         "height": 960, "numberResults": 2, "seed": 100, "taskUUID": str(uuid.uuid4())},
    ]
    job = {"url": sdk_server.ws_url, "key": API_KEY, "image": str(assets["image"]), "tasks": tasks, "errors": True}
    out = run_client(["node", str(JS / "client.mjs")], job, cwd=JS)
    up = out["uploads"]["image"]
    assert up["imageUUID"] and up["imageURL"].startswith(sdk_server.http_url)
    one, pair = out["results"]
    assert len(one) == 1 and one[0]["status"] == "success" and one[0]["cost"] > 0
    info = download_and_probe(one[0]["videoURL"], tmp_path / "one.mp4")
    # 640x360 input with resolution 720p: the 16:9 size; the fake pipeline makes no sound.
    assert (info.width, info.height, info.frames, info.audio_codec) == (1280, 720, 32, None)
    assert len(pair) == 2 and {v["seed"] for v in pair} == {100, 101}
    assert len({v["videoUUID"] for v in pair}) == 2 and pair[0]["taskUUID"] == tasks[1]["taskUUID"]
    assert out["errors"] == {"invalid": "invalidDuration", "duplicate": "conflictTaskUUID",
                             "unknown": "taskFailedOrNotFound", "bad_key": "invalidApiKey"}

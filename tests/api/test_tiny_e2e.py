"""End to end with the real engine: the tiny random-weight Wan model in the subprocess executor,
driven by the `runware` 0.5.24 SDK. Output is noise; the test checks the service around it."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest

from tests.api.support import API_KEY, make_settings
from tests.sdk.conftest import HERE, assets, download_and_probe, isolated_sdk, run_client  # noqa: F401
from wanflash.testing import live_server

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("wanflash.pipelines.registry") is None
                    or importlib.util.find_spec("torch") is None or importlib.util.find_spec("diffusers") is None,
                    reason="the engine (wanflash.pipelines.registry, torch, diffusers) is not installed")
def test_tiny_model_through_runware_sdk(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    path = isolated_sdk("runware==0.5.24")
    settings = make_settings(tmp_path / "data", executor="subprocess", profile="tiny")
    task = {"taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash", "positivePrompt": "a red cube",
            "resolution": "720p", "duration": 2, "seed": 3, "numberResults": 1,
            "inputs": {"frameImages": [{"image": "$IMAGE", "frame": "first"}]},
            "providerSettings": {"alibaba": {"audio": False, "promptExtend": False}}}
    with live_server(settings) as server:  # the default factory: wanflash.pipelines.registry:create_pipeline
        out = run_client([sys.executable, str(HERE / "clients" / "runware_legacy.py")],
                         {"url": server.ws_url, "key": API_KEY, "image": str(assets["image"]), "tasks": [task]},
                         env={"PYTHONPATH": str(path), "RUNWARE_VIDEO_INITIAL_TIMEOUT": "2000",
                              "RUNWARE_VIDEO_POLLING_DELAY": "300"}, timeout=400)
        (video,) = out["results"][0]
        assert video["status"] == "success" and video["seed"] == 3
        info = download_and_probe(video["videoURL"], tmp_path / "tiny.mp4")
        assert (info.width, info.height, info.frames, info.video_codec) == (1280, 720, 32, "h264")

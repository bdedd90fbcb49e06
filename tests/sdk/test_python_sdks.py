"""The real Python SDKs against the loopback server: `runware` 0.5.24 (WebSocket) with the four
model-page examples, and `runware-sdk` 1.8.0 over REST and WebSocket."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.api.support import API_KEY, make_settings
from tests.sdk.conftest import HERE, download_and_probe, isolated_sdk, run_client
from wanflash.testing import LiveServer, live_server

EXAMPLES: list[dict[str, Any]] = json.loads((HERE / "model_page_examples.json").read_text())

# 0.5.24 waits VIDEO_INITIAL_TIMEOUT for a poll answer it accepts (processing items are filtered
# out), then VIDEO_POLLING_DELAY: ~33 s per poll by default. It reads these at import.
LEGACY_ENV = {"RUNWARE_VIDEO_INITIAL_TIMEOUT": "1500", "RUNWARE_VIDEO_POLLING_DELAY": "200"}


def small_task(**kw: Any) -> dict[str, Any]:
    t = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
         "positivePrompt": "a red cube turning", "resolution": "720p", "duration": 2,
         "inputs": {"frameImages": [{"image": "$IMAGE", "frame": "first"}]}}
    t.update(kw)
    return t


def test_runware_legacy_examples(sdk_server: LiveServer, assets: dict[str, Path], tmp_path: Path) -> None:
    path = isolated_sdk("runware==0.5.24")
    tasks = [dict(e, taskUUID=str(uuid.uuid4())) for e in EXAMPLES]
    two = small_task(numberResults=2, includeCost=True)
    two.pop("taskType")
    job = {"url": sdk_server.ws_url, "key": API_KEY, "image": str(assets["image"]), "audio": str(assets["audio"]),
           "tasks": tasks + [two], "errors": True}
    out = run_client([sys.executable, str(HERE / "clients" / "runware_legacy.py")], job,
                     env={"PYTHONPATH": str(path), **LEGACY_ENV})
    assert out["version"] == "0.5.24"
    assert out["uploads"]["image"]["imageURL"].startswith(sdk_server.http_url + "/media/")
    assert out["uploads"]["audio"]["mediaUUID"]
    assert len(out["results"]) == 5
    for task, videos in zip(tasks, out["results"][:4]):
        assert len(videos) == 1
        v = videos[0]
        assert v["taskUUID"] == task["taskUUID"] and v["status"] == "success" and v["seed"] == task["seed"]
        info = download_and_probe(v["videoURL"], tmp_path / f"{v['videoUUID']}.mp4")
        fps = 16  # the tiny profile
        assert (info.width, info.height, info.frames) == (task["width"], task["height"], task["duration"] * fps)
        want_audio = task["providerSettings"]["alibaba"]["audio"] and "audio" in task["inputs"]
        if want_audio:  # the uploaded WAV is the soundtrack of example 3
            assert info.audio_codec == "aac"
    pair = out["results"][4]
    assert len(pair) == 2 and len({v["videoUUID"] for v in pair}) == 2 and len({v["seed"] for v in pair}) == 2
    assert all(v["cost"] > 0 for v in pair)
    for v in pair:
        download_and_probe(v["videoURL"], tmp_path / f"{v['videoUUID']}.mp4")
    errs = out["errors"]
    assert errs["invalid"] == "invalidDuration"
    assert errs["duplicate"] == "conflictTaskUUID"
    assert errs["unknown"] == "taskFailedOrNotFound"
    assert errs["bad_key"].startswith("ConnectionError") and "Invalid API key" in errs["bad_key"]


def _runware_sdk(sdk_server: LiveServer, assets: dict[str, Path], tmp_path: Path, transport: str) -> None:
    path = isolated_sdk("runware-sdk==1.8.0")
    tasks = [small_task(), small_task(numberResults=2, outputFormat="MP4", includeCost=True, seed=7)]
    job = {"transport": transport, "ws_url": sdk_server.ws_url, "http_url": sdk_server.http_url + "/v1",
           "key": API_KEY, "image": str(assets["image"]), "tasks": tasks, "errors": True}
    out = run_client([sys.executable, str(HERE / "clients" / "runware_sdk.py")], job, env={"PYTHONPATH": str(path)})
    assert out["uploads"]["image"]["imageUUID"]
    one, pair = out["results"]
    assert len(one) == 1 and one[0]["status"] == "success"
    info = download_and_probe(one[0]["videoURL"], tmp_path / "one.mp4")
    assert (info.width, info.height, info.frames) == (1280, 720, 32)
    assert len(pair) == 2 and {v["seed"] for v in pair} == {7, 8} and len({v["videoUUID"] for v in pair}) == 2
    errs = out["errors"]
    # runware-sdk folds server codes into categories; the raw code's meaning survives in them.
    status = {"rest": ("400", "404", "401"), "websocket": ("None", "None", "None")}[transport]
    assert errs["invalid"].startswith(f"validation|{status[0]}|Invalid value for 'duration'"), errs
    assert errs["unknown"].startswith(f"notFound|{status[1]}|"), errs
    assert errs["bad_key"].startswith(f"auth|{status[2]}|"), errs

def test_runware_sdk_rest(sdk_server: LiveServer, assets: dict[str, Path], tmp_path: Path) -> None:
    _runware_sdk(sdk_server, assets, tmp_path, "rest")


def test_runware_sdk_websocket(sdk_server: LiveServer, assets: dict[str, Path], tmp_path: Path) -> None:
    _runware_sdk(sdk_server, assets, tmp_path, "websocket")


def test_runware_sdk_partial_batch_is_not_a_failed_request(tmp_path: Path) -> None:
    """A REST array where one task is accepted and one refused (429) is answered 200 with the refusal
    in errors[]: runware-sdk returns it as it is. Answered 429, the SDK retried the whole array, which
    resubmitted the accepted task (conflictTaskUUID) and raised (issue 15, item 2)."""
    path = isolated_sdk("runware-sdk==1.8.0")
    settings = make_settings(tmp_path / "d", rate_limit_burst=1, rate_limit_per_s=0.001)
    with live_server(settings, pipeline_factory="tests.sdk.fast_pipeline:factory") as s:
        ok, refused = small_task(), small_task()
        for t in (ok, refused):
            del t["inputs"]  # text-to-video: no upload needed
        job = {"http_url": s.http_url + "/v1", "key": API_KEY, "tasks": [ok, refused]}
        out = run_client([sys.executable, str(HERE / "clients" / "runware_sdk_batch.py")], job,
                         env={"PYTHONPATH": str(path)})
        assert "frame" in out, out
        frame = out["frame"]
        assert frame["data"] == [{"taskType": "videoInference", "taskUUID": ok["taskUUID"]}]
        assert [(e["code"], e["taskUUID"]) for e in frame["errors"]] == [("rateLimitExceeded", refused["taskUUID"])]
        assert s.services.store.get(ok["taskUUID"]) is not None and s.services.store.get(refused["taskUUID"]) is None

"""shotType multi and safety through the live API (REST), end to end.

* Safety with a real (tiny, config-built) transformers classifier as the configured detector:
  per-result ``NSFWContent`` true/false on the getResponse items, no field when no check was
  asked, the withhold setting (task fails with ``nsfwContentDetected``), the input image checked
  before any generation, and ``unsupportedSafetyCheck`` at submit when no detector is configured.
* Multi-shot on the tiny Wan model in the subprocess executor, with a loopback OpenAI-compatible
  endpoint returning a shot plan: exact frame count and duration, the plan reported back.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.support import API_KEY, make_settings
from tests.pipelines.test_prompt_extend import FakeLLM, fake_llm  # noqa: F401  (module-scoped fixture)
from wanflash import MODEL_ID
from wanflash.media.probe import probe_file
from wanflash.pipelines.base import GenerationResult
from wanflash.testing import live_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None
                                or importlib.util.find_spec("transformers") is None,
                                reason="the detectors need torch and transformers")
HDR = {"Authorization": f"Bearer {API_KEY}"}
WHITE, DARK = 235, 25


class SolidPipeline:
    """Even seeds give white videos, odd seeds dark ones; counts its generate calls."""

    name = "solid"

    def __init__(self) -> None:
        self.calls = 0

    def load(self) -> None:
        pass

    def generate(self, spec: Any, on_step: Any, *, image: Any = None) -> GenerationResult:
        self.calls += 1
        on_step(1, 1, "denoise")
        videos = [np.full((spec.num_frames, spec.height, spec.width, 3), WHITE if s % 2 == 0 else DARK, np.uint8)
                  for s in spec.seeds]
        return GenerationResult(videos=videos, seeds=list(spec.seeds))


def _data_uri(value: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (value, value, value)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _task(**kw: Any) -> dict[str, Any]:
    t = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL_ID, "positivePrompt": "a cube",
         "width": 960, "height": 960, "duration": 2, "seed": 2, "numberResults": 2,
         "providerSettings": {"alibaba": {"promptExtend": False, "audio": False}},
         "inputs": {"frameImages": [_data_uri(DARK)]}}
    t.update(kw)
    return t


def _run(http: httpx.Client, task: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Submit and poll until done: {"data": [...]} or {"errors": [...]}."""
    ack = http.post("/v1", json=[task])
    assert ack.status_code == 200, ack.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()
        if body.get("errors") or all(d.get("status") == "success" for d in body.get("data", [])):
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task['taskUUID']} did not finish")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.pipelines.safety_models import build_classifier

    white = [np.full((64, 64, 3), WHITE, np.uint8)]
    dark = [np.full((64, 64, 3), DARK, np.uint8)]
    return build_classifier(tmp_path_factory.mktemp("cls"), white, dark)


def test_nsfw_flags_per_result_and_when_not_asked(tmp_path: Path, classifier_dir: Path) -> None:
    settings = make_settings(tmp_path / "d", safety_detector="classifier", safety_model_dir=classifier_dir,
                             safety_withhold=False)
    with live_server(settings, pipeline_factory=lambda s: SolidPipeline()) as server, \
            httpx.Client(base_url=server.http_url, headers=HDR, timeout=30) as http:
        body = _run(http, _task(safety={"checkContent": True}))  # no mode: fast
        assert [d["NSFWContent"] for d in body["data"]] == [True, False]  # seed 2 white, seed 3 dark
        assert [d["seed"] for d in body["data"]] == [2, 3] and all(d["videoURL"] for d in body["data"])
        body = _run(http, _task(safety={"checkContent": True, "mode": "full"}, seed=3))
        assert [d["NSFWContent"] for d in body["data"]] == [False, True]
        body = _run(http, _task())  # not asked: not checked, and not claimed
        assert all("NSFWContent" not in d for d in body["data"])
        # A flagged input image marks every result (the outputs here are delivered: withhold off).
        body = _run(http, _task(safety={"checkContent": True}, seed=3, numberResults=1,
                                inputs={"frameImages": [_data_uri(WHITE)]}))
        assert [d["NSFWContent"] for d in body["data"]] == [True]


def test_withhold_fails_the_task_and_checks_the_input_first(tmp_path: Path, classifier_dir: Path) -> None:
    pipe = SolidPipeline()
    settings = make_settings(tmp_path / "d", safety_detector="classifier", safety_model_dir=classifier_dir)
    with live_server(settings, pipeline_factory=lambda s: pipe) as server, \
            httpx.Client(base_url=server.http_url, headers=HDR, timeout=30) as http:
        body = _run(http, _task(safety={"checkContent": True, "mode": "fast"}))
        (err,) = body["errors"]
        assert err["code"] == "nsfwContentDetected" and "result 1" in err["message"]
        assert pipe.calls == 1
        assert not [f for f in (tmp_path / "d").rglob("*.mp4")]  # nothing encoded or stored
        body = _run(http, _task(safety={"checkContent": True}, seed=3, numberResults=1,
                                inputs={"frameImages": [_data_uri(WHITE)]}))
        (err,) = body["errors"]
        assert err["code"] == "nsfwContentDetected" and "input image" in err["message"]
        assert pipe.calls == 1  # refused before generation
        body = _run(http, _task(safety={"checkContent": True}, seed=3, numberResults=1))  # dark: delivered
        assert [d["NSFWContent"] for d in body["data"]] == [False]
        assert len([f for f in (tmp_path / "d").rglob("*.mp4")]) == 1


def test_check_requested_without_a_detector_is_refused_at_submit(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d"), pipeline_factory=lambda s: SolidPipeline()) as server, \
            httpx.Client(base_url=server.http_url, headers=HDR, timeout=30) as http:
        for safety, param in (({"checkContent": True}, "safety.checkContent"), ({"mode": "full"}, "safety.mode")):
            t = _task(safety=safety)
            r = http.post("/v1", json=[t])
            (err,) = r.json()["errors"]
            assert r.status_code == 400 and err["code"] == "unsupportedSafetyCheck"
            assert err["parameter"] == param and err["taskUUID"] == t["taskUUID"]
        body = _run(http, _task(safety={"checkContent": False}))
        assert all("NSFWContent" not in d for d in body["data"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="the engine is not installed")
def test_multi_shot_on_the_tiny_model(tmp_path: Path, fake_llm: FakeLLM) -> None:  # noqa: F811
    from tests.pipelines.safety_models import build_constant_classifier

    plan = {"shots": [{"duration": 1, "prompt": "the cat stretches", "transition": "continue"},
                      {"duration": 1, "prompt": "a wide shot of the city at night", "transition": "cut"}]}
    fake_llm.mode, fake_llm.reply = "ok", json.dumps(plan)
    settings = make_settings(tmp_path / "d", executor="subprocess", profile="tiny",
                             prompt_extend_backend="openai", prompt_extend_url=fake_llm.url,
                             safety_detector="classifier",
                             safety_model_dir=build_constant_classifier(tmp_path / "cls", unsafe=False))
    with live_server(settings) as server, httpx.Client(base_url=server.http_url, headers=HDR, timeout=30) as http:
        task = _task(numberResults=1, outputFormat="WEBM", safety={"checkContent": True, "mode": "full"},
                     providerSettings={"alibaba": {"promptExtend": True, "shotType": "multi", "audio": False}})
        body = _run(http, task, timeout=400)
        (item,) = body["data"]
        assert item["promptExtended"] is True and item["NSFWContent"] is False
        assert "the cat stretches" in item["extendedPrompt"] and "(1s, cut)" in item["extendedPrompt"]
        video = http.get(item["videoURL"])
        assert video.status_code == 200
        (tmp_path / "v.webm").write_bytes(video.content)
        info = probe_file(tmp_path / "v.webm")
        assert (info.width, info.height, info.frames, info.video_codec) == (960, 960, 32, "vp9")
        assert info.duration == pytest.approx(2.0, abs=1 / 16)

"""promptExtend in the render path: the rewritten prompt is what the pipeline sees, and what was
used is reported back on the result; with promptExtend off the extender is never called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.specs import validate_video_task
from wanflash.pipelines.fake import FakePipeline
from wanflash.pipelines.profiles import PROFILES
from wanflash.pipelines.prompt_extend import PromptExtender
from wanflash.worker.protocol import RunJob
from wanflash.worker.render import Renderer

TASK = {
    "taskType": "videoInference",
    "taskUUID": "5b3f1c9e-8a41-4c2b-9d7e-2f6a1b0c3d4e",
    "model": "alibaba:wan@2.6-flash",
    "positivePrompt": "a cat",
    "width": 960,
    "height": 960,
    "duration": 2,
    "seed": 3,
}


class RecordingPipeline(FakePipeline):
    def __init__(self) -> None:
        super().__init__(steps=1)
        self.prompts: list[str] = []

    def generate(self, spec, on_step, *, image=None):  # type: ignore[no-untyped-def]
        self.prompts.append(spec.positive_prompt)
        return super().generate(spec, on_step, image=image)


class ScriptedExtender(PromptExtender):
    """The real extend() path with a scripted chat completion (or a failing one)."""

    backend = "test"

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def complete(self, system: str, user: str, *, image: Any, max_tokens: int) -> tuple[str, str | None]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("endpoint down")
        return "A CAT, slow dolly-in", None


def _job(tmp_path: Path, **overrides: Any) -> RunJob:
    spec = validate_video_task({**TASK, **overrides}, profile=PROFILES["tiny"])
    return RunJob(task_uuid=spec.task_uuid, attempt=1, spec_json=spec.model_dump_json(), out_dir=str(tmp_path))


def test_rewritten_prompt_is_generated_and_reported(tmp_path: Path) -> None:
    pipe, ext = RecordingPipeline(), ScriptedExtender()
    done = Renderer(pipe, ext).render(_job(tmp_path), lambda *a: None)
    assert pipe.prompts == ["A CAT, slow dolly-in"]
    assert done.prompt_extend is not None and done.prompt_extend.prompt == "A CAT, slow dolly-in"
    assert done.prompt_extend.extended is True
    assert ext.calls == 1


def test_failed_extension_keeps_the_original_prompt(tmp_path: Path) -> None:
    pipe = RecordingPipeline()
    done = Renderer(pipe, ScriptedExtender(fail=True)).render(_job(tmp_path), lambda *a: None)
    assert pipe.prompts == ["a cat"]
    assert done.prompt_extend is not None and done.prompt_extend.extended is False


def test_prompt_extend_false_skips_the_extender(tmp_path: Path) -> None:
    pipe, ext = RecordingPipeline(), ScriptedExtender()
    done = Renderer(pipe, ext).render(_job(tmp_path, providerSettings={"alibaba": {"promptExtend": False}}),
                                      lambda *a: None)
    assert ext.calls == 0
    assert pipe.prompts == ["a cat"]
    assert done.prompt_extend is None

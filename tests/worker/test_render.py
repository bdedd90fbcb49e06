"""The one render path: what it reports reaches the client through typed records, and ``wanflash
generate`` renders through the same :class:`Renderer` as the service.

* A job with promptExtend and a content check runs on the :class:`Renderer` under the real
  :class:`Supervisor`; the stored :class:`OutputRecord` and the ``getResponse`` items carry
  ``extendedPrompt``/``promptExtended`` and a per-result ``NSFWContent``, so dropping or renaming
  either anywhere between the renderer and the wire fails here.
* The CLI with ``--shot-type multi --safety full``: the extender's shot plan is rendered shot by
  shot, the frames are checked, and the result line reports ``NSFWContent``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.jobs.records import no_webhooks
from tests.worker.test_multishot import PlanExtender
from tests.worker.test_prompt_extend_wiring import ScriptedExtender
from wanflash import MODEL_ID
from wanflash.cli import main
from wanflash.config import Settings
from wanflash.delivery.responses import poll_reply
from wanflash.jobs.model import JobSpec, TaskState
from wanflash.jobs.store import SqliteJobSource
from wanflash.pipelines.base import GenerationResult
from wanflash.pipelines.safety import ContentChecker, ContentDetector
from wanflash.storage.local import LocalStore
from wanflash.worker.executor import OnProgress, outcome
from wanflash.worker.protocol import Done, ExecutorState, RunJob
from wanflash.worker.render import Renderer
from wanflash.worker.supervisor import Supervisor

WHITE, DARK = 235, 25


class SolidPipeline:
    """Even seeds give white videos, odd seeds dark ones; records the prompts it was asked."""

    name = "solid"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def load(self) -> None:
        pass

    def generate(self, spec: JobSpec, on_step: Any, *, image: Any = None) -> GenerationResult:
        self.prompts.append(spec.positive_prompt)
        on_step(1, 1, "denoise")
        videos = [np.full((spec.num_frames, spec.height, spec.width, 3), WHITE if s % 2 == 0 else DARK, np.uint8)
                  for s in spec.seeds]
        return GenerationResult(videos=videos, seeds=list(spec.seeds))


class BrightDetector(ContentDetector):
    """Flags bright frames."""

    name = "bright"

    def load(self) -> None:
        pass

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        return [float(np.asarray(f).mean()) > 128 for f in frames]


class HostedRenderer:
    """An executor hosting a ready :class:`Renderer` in a thread (what the in-process executor does
    once its renderer is built from settings)."""

    name = "hosted"
    state = ExecutorState.READY
    on_loaded = None

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def start(self) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    async def run(self, job: RunJob, on_progress: OnProgress) -> Done:
        return outcome(await asyncio.to_thread(self.renderer.run, job, lambda *a: None))

    def cancel(self, task_uuid: str) -> None:
        pass

    async def restart(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_prompt_extension_and_safety_flags_reach_the_poll_reply(tmp_path: Path) -> None:
    # The worker serves content checks (the queue a safety-checked task waits in), as its checker says.
    settings = Settings(data_dir=tmp_path, heartbeat_seconds=0.2, lease_seconds=5, safety_detector="classifier")
    store, storage = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks), LocalStore(tmp_path / "media")
    renderer = Renderer(SolidPipeline(), ScriptedExtender(), ContentChecker(BrightDetector(), withhold=False))
    sup = Supervisor(settings, store, storage, HostedRenderer(renderer), poll_seconds=0.05)  # type: ignore[arg-type]
    s = JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt="a cat", width=64,
                height=48, resolution_class="720p", duration=1, fps=8, num_frames=8, seeds=[2, 3], number_results=2,
                cost=0.1, audio=False, prompt_extend=True, safety_check=True, safety_mode="full")
    store.insert(s)
    sup.start()
    try:
        for _ in range(600):
            rec = store.get(s.task_uuid)
            if rec and rec.state.terminal:
                break
            await asyncio.sleep(0.05)
    finally:
        await sup.stop()
    assert rec is not None and rec.state is TaskState.SUCCEEDED, rec
    assert rec.results is not None and [r.nsfw_content for r in rec.results] == [True, False]
    assert all(r.prompt_extend is not None and r.prompt_extend.prompt == "A CAT, slow dolly-in" for r in rec.results)
    items = poll_reply(rec, lambda key, exp: f"http://h/{key}", default_ttl=60).data
    assert [i["NSFWContent"] for i in items] == [True, False]
    assert [(i["extendedPrompt"], i["promptExtended"]) for i in items] == [("A CAT, slow dolly-in", True)] * 2
    assert renderer.pipeline.prompts == ["A CAT, slow dolly-in"]  # type: ignore[attr-defined]
    store.close()


# -- wanflash generate: the same runner --------------------------------------------------------

CLI_PIPELINE = SolidPipeline()
PLAN = {"shots": [{"duration": 1, "prompt": "shot one: the cat sits", "transition": "continue"},
                  {"duration": 1, "prompt": "shot two: the cat leaves", "transition": "cut"}]}


def solid_pipeline(settings: Settings) -> SolidPipeline:
    return CLI_PIPELINE


def test_cli_renders_prompt_extension_multishot_and_safety(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from wanflash.pipelines import prompt_extend, safety

    # The CLI builds its renderer from settings like a worker: the configured extender and detector.
    monkeypatch.setenv("WANFLASH_SAFETY_DETECTOR", "classifier")
    monkeypatch.setattr(prompt_extend, "create_extender", lambda settings: PlanExtender(PLAN))
    monkeypatch.setattr(safety, "create_checker", lambda settings: ContentChecker(BrightDetector(), withhold=False))
    CLI_PIPELINE.prompts.clear()
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--prompt", "a cat", "--duration", "2", "--shot-type", "multi", "--safety", "full",
               "--seed", "4", "--no-audio", "--width", "960", "--height", "960", "--data-dir", str(tmp_path),
               "--pipeline-factory", "tests.worker.test_render:solid_pipeline", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert CLI_PIPELINE.prompts == [s["prompt"] for s in PLAN["shots"]]  # one generation per planned shot
    assert "promptExtend (test): extended" in captured.err
    assert f"seed 4: {out} (h264, 960x960, 16 fps, 2.00s" in captured.out and "NSFWContent true" in captured.out


def test_cli_refuses_a_safety_check_without_a_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "--prompt", "a cat", "--safety", "fast", "--resolution", "720p", "--data-dir", str(tmp_path),
               "--pipeline-factory", "tests.worker.test_render:solid_pipeline", "-o", str(tmp_path / "x.mp4")])
    assert rc == 2
    assert "safety.mode" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()

"""Failure-mode pipelines for the worker tests (module-level factories: picklable for spawn)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from wanflash.errors import JobFailed
from wanflash.pipelines.fake import FakePipeline


class ExitOnce(FakePipeline):
    """Kills its own process (os._exit) on the first job ever; later children behave."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def generate(self, spec: Any, on_step: Any = None, *, image: Any = None) -> Any:
        if not self.marker.exists():
            self.marker.touch()
            os._exit(3)
        return super().generate(spec, on_step or (lambda *a: None), image=image)


def exit_once(settings: Any) -> ExitOnce:
    return ExitOnce(Path(settings.data_dir) / "exit-once.marker")


class Broken(FakePipeline):
    def generate(self, spec: Any, on_step: Any = None, *, image: Any = None) -> Any:
        if "retry" in spec.positive_prompt:
            raise JobFailed("inferenceError", "transient", retryable=True)
        raise RuntimeError("boom")


def broken(settings: Any) -> Broken:
    return Broken()


def slow(settings: Any) -> FakePipeline:
    return FakePipeline(steps=200, step_seconds=0.02)


def fail_to_load(settings: Any) -> FakePipeline:
    raise FileNotFoundError("no weights here")


def sleepy_load(settings: Any) -> FakePipeline:
    time.sleep(2.0)  # longer than the deadline test_reliability gives its jobs
    return FakePipeline()


class HangIf(FakePipeline):
    """Never returns when the prompt says "hang" (a stuck CUDA kernel); otherwise the fast fake."""

    def generate(self, spec: Any, on_step: Any = None, *, image: Any = None) -> Any:
        if "hang" in spec.positive_prompt:
            while True:
                time.sleep(1)
        return super().generate(spec, on_step or (lambda *a: None), image=image)


def hang_if(settings: Any) -> HangIf:
    return HangIf()


class Paced:
    """The vectorised fake with a fixed time per step (10 x 0.1 s): long enough to be killed mid-job."""

    name = "paced"

    def __init__(self) -> None:
        from tests.sdk.fast_pipeline import FastFakePipeline

        self._inner = FastFakePipeline()

    def load(self) -> None:
        pass

    def generate(self, spec: Any, on_step: Any = None, *, image: Any = None) -> Any:
        step = on_step or (lambda *a: None)
        for i in range(10):
            time.sleep(0.1)
            step(i + 1, 10, "denoise")
        return self._inner.generate(spec, lambda *a: None, image=image)


def paced(settings: Any) -> Paced:
    return Paced()


def slot_probe(settings: Any) -> FakePipeline:
    """Records, per worker-slot process, the GPU it was given (``wanflash worker`` sets CUDA_VISIBLE_DEVICES)."""
    d = Path(settings.data_dir) / "slots"
    d.mkdir(parents=True, exist_ok=True)
    (d / str(os.getpid())).write_text(f"{os.environ.get('CUDA_VISIBLE_DEVICES')}|{settings.engine.device}")
    return FakePipeline()

class RankRecorder(FakePipeline):
    """For worker-group tests: logs what each rank received and every step it completed (after
    the group's cancel agreement) to ``data_dir/rank<r>.log``. Prompts containing "slow" run 30
    steps of 0.1 s, others 2 quick steps."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def generate(self, spec: Any, on_step: Any = None, *, image: Any = None) -> Any:
        import json

        import torch.distributed as dist

        log = self.log_dir / f"rank{dist.get_rank()}.log"
        slow = "slow" in spec.positive_prompt
        self.steps, self.step_seconds = (30, 0.1) if slow else (2, 0.0)

        def write(**row: Any) -> None:
            with open(log, "a") as f:
                f.write(json.dumps({"task": spec.task_uuid, **row}) + "\n")

        write(seeds=list(spec.seeds), prompt=spec.positive_prompt, image=list(image.size) if image else None)

        def step(i: int, total: int, stage: str) -> None:
            on_step(i, total, stage)  # raises JobCancelled on every rank at once
            write(step=i)

        return super().generate(spec, step, image=image)


def rank_recorder(settings: Any) -> RankRecorder:
    return RankRecorder(Path(settings.data_dir))

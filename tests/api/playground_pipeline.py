"""A fast fake pipeline whose denoising takes a few visible seconds (the browser test watches progress)."""

from __future__ import annotations

import time
from typing import Any

from tests.sdk.fast_pipeline import FastFakePipeline
from wanflash.pipelines.base import GenerationResult, OnStep, no_progress

STEPS = 10
STEP_SECONDS = 0.3


class SteppedFake(FastFakePipeline):
    name = "stepped-fake"

    def generate(self, spec: Any, on_step: OnStep = no_progress, *, image: Any = None) -> GenerationResult:
        for i in range(STEPS):
            time.sleep(STEP_SECONDS)
            on_step(i + 1, STEPS, "denoise")
        return super().generate(spec, no_progress, image=image)


def factory(settings: Any) -> SteppedFake:
    return SteppedFake()

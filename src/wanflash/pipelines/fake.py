"""A deterministic numpy-only pipeline for service tests and dry runs (no torch).

It honours the whole ``VideoPipeline`` contract (exact size and frame count, per-result seeds,
step callbacks that can cancel) and draws a moving gradient seeded by each result's seed, so
two seeds give two different videos and one seed always gives the same one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from wanflash.pipelines.base import GenerationResult, OnStep, no_progress

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.jobs.model import JobSpec


class FakePipeline:
    name = "fake"

    def __init__(self, steps: int = 2, step_seconds: float = 0.0) -> None:
        self.steps = steps
        self.step_seconds = step_seconds
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def generate(
        self, spec: JobSpec, on_step: OnStep = no_progress, *, image: Image.Image | None = None
    ) -> GenerationResult:
        for i in range(self.steps):
            if self.step_seconds:
                time.sleep(self.step_seconds)
            on_step(i + 1, self.steps, "denoise")
        videos = [self._draw(spec, seed, image) for seed in spec.seeds]
        return GenerationResult(videos=videos, seeds=list(spec.seeds), audio=[None] * len(videos))

    @staticmethod
    def _draw(spec: JobSpec, seed: int, image: Image.Image | None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, size=3, dtype=np.int64)
        h, w, f = spec.height, spec.width, spec.num_frames
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
        out = np.empty((f, h, w, 3), dtype=np.uint8)
        first = None
        if image is not None:
            first = np.asarray(image.convert("RGB").resize((w, h)), dtype=np.uint8)
        for t in range(f):
            shift = 255.0 * t / max(1, f)
            for c in range(3):
                out[t, :, :, c] = ((x + y + shift + base[c]) % 256).astype(np.uint8)
        if first is not None:
            out[0] = first
        return out

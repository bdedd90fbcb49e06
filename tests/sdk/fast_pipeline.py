"""A vectorised variant of FakePipeline for the SDK tests (the model-page examples are up to
1920x1080 x 112 frames; FakePipeline's per-frame loop takes ~10 s there). Same contract: exact
size and frame count, one distinct video per seed, step callbacks that can cancel."""

from __future__ import annotations

from typing import Any

import numpy as np

from wanflash.pipelines.base import GenerationResult, OnStep, no_progress


class FastFakePipeline:
    name = "fast-fake"

    def load(self) -> None:
        pass

    def generate(self, spec: Any, on_step: OnStep = no_progress, *, image: Any = None) -> GenerationResult:
        for i in range(2):
            on_step(i + 1, 2, "denoise")
        videos = []
        for seed in spec.seeds:
            rng = np.random.default_rng(seed)
            h, w, f = spec.height, spec.width, spec.num_frames
            base = (np.add.outer(np.arange(h) // 4, np.arange(w) // 4)[:, :, None]
                    + rng.integers(0, 256, size=3)[None, None, :]).astype(np.uint8)
            shift = (np.arange(f) * 4).astype(np.uint8)[:, None, None, None]
            videos.append(base[None] + shift)  # uint8 wraps: a moving gradient
        return GenerationResult(videos=videos, seeds=list(spec.seeds), audio=[None] * len(videos))


def factory(settings: Any) -> FastFakePipeline:
    return FastFakePipeline()

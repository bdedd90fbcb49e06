"""The one interface every video pipeline implements.

``load()`` once, then ``generate(spec, on_step, image=...)`` many times. Progress and
cancellation go through ``on_step(step, total, stage)``: it is called after every denoising
step and raises :class:`wanflash.errors.JobCancelled` to stop the run before the VAE decode.

``generate`` returns one uint8 array per result, shaped ``(spec.num_frames, spec.height,
spec.width, 3)``: exactly the requested size and frame count, whatever the model's grid.
This module imports no torch, so the fake pipeline and the worker parent can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from wanflash.media.track import AudioTrack  # the pipelines' audio output is the media layer's track

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from wanflash.jobs.model import JobSpec

OnStep = Callable[[int, int, str], None]


def no_progress(step: int, total: int, stage: str) -> None:
    """An ``OnStep`` that ignores progress and never cancels."""


@dataclass
class GenerationResult:
    videos: list[np.ndarray]  # each (F, H, W, 3) uint8
    seeds: list[int]
    audio: list[AudioTrack | None] = field(default_factory=list)  # per video, when the pipeline made sound
    info: dict[str, object] = field(default_factory=dict)  # e.g. the generation size, segments, timings


class VideoPipeline(Protocol):
    name: str

    def load(self) -> None: ...

    def generate(
        self, spec: JobSpec, on_step: OnStep = no_progress, *, image: Image.Image | None = None
    ) -> GenerationResult: ...

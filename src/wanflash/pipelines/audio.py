"""Native audio: one interface for every audio backend, and the stage that runs it after the video.

A backend (:class:`AudioBackend`) turns one finished clip into one waveform. Which backend runs is
``WANFLASH_AUDIO_MODEL`` (:data:`BACKENDS`; ``none``: no audio model); each has a tiny random-weight
twin built offline, so the ``tiny`` profile and the tests run the same code path on a CPU:

* ``ace-step`` (default): ACE-Step 1.5 turbo through diffusers ``AceStepPipeline``, MIT. Text-to-music:
  it **follows the words, not the picture** (an instrumental bed for the prompt; no sound effects
  synchronised to what happens on screen, no speech). See :mod:`wanflash.pipelines.audio_acestep`.
* ``ltx2`` (opt-in, LTX-2 Community License): video-to-audio with LTX-2 held on the finished frames,
  so the sound follows the picture and the prompt. See :mod:`wanflash.pipelines.audio_ltx2`.

Guarantees of :meth:`AudioVideoPipeline.generate` whatever the backend:

* one :class:`AudioTrack` per video, float32 ``(channels, n)`` at the backend's rate with
  ``n = round(frames / fps * rate)``: exactly as long as the video (the encoder resamples to 48 kHz);
* a track depends only on its video, the prompt and its result's seed;
* ``on_step(step, total, "audio")`` after every denoising step, ``total = steps x videos``; raising
  from it (``JobCancelled``) stops the stage;
* the stage runs only when the spec asks for sound (``spec.audio``), no input track was supplied
  (``spec.audio_key`` is None: that track is the soundtrack, muxed by the worker) and the video
  pipeline made none itself.

This module imports neither torch nor diffusers; the backends do, when they are created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wanflash.pipelines.base import AudioTrack, GenerationResult, OnStep, VideoPipeline, no_progress

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from wanflash.jobs.model import JobSpec

STAGE = "audio"


@dataclass(frozen=True)
class BackendInfo:
    """What an operator needs to know before choosing a backend (README *Audio*, ``doctor``)."""

    conditioning: str  # "prompt" (follows the words) or "video+prompt" (follows the picture too)
    weights: str  # the diffusers-format directory WANFLASH_AUDIO_WEIGHTS_DIR must hold
    licence: str


BACKENDS: dict[str, BackendInfo] = {
    "ace-step": BackendInfo(
        "prompt", "diffusers-format ACE-Step 1.5 turbo (e.g. ACE-Step/acestep-v15-xl-turbo-diffusers)",
        "MIT (ACE-Step 1.5: DiT, VAE); text encoder Qwen3-Embedding-0.6B, Apache-2.0"),
    "ltx2": BackendInfo(
        "video+prompt", "diffusers-format LTX-2 (distilled: e.g. diffusers/LTX-2.3-Distilled-Diffusers)",
        "LTX-2 Community License Agreement (not open source: free commercial use only under a revenue "
        "cap, and not in a service competing with Lightricks' offerings); Gemma-3 text encoder under "
        "Google's Gemma terms"),
}

StepTick = Callable[[], None]


class AudioBackend(Protocol):
    """One audio model. ``load()`` once; then ``generate`` per clip, from any thread that owns it."""

    name: str  # reported in result.info["audio"]["model"]
    conditioning: str  # "prompt" or "video+prompt"

    def load(self) -> None: ...

    @property
    def steps(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    def generate(self, frames: np.ndarray, fps: float, prompt: str, negative_prompt: str, seconds: float,
                 seed: int, on_step: StepTick) -> np.ndarray:
        """A float32 ``(channels, m)`` waveform at ``sample_rate`` for ``frames`` ((F, H, W, 3) uint8 at
        ``fps``, ``seconds`` long); ``m`` need not be exact (the stage cuts or pads). ``on_step()`` after
        every denoising step (it may raise to cancel)."""
        ...


def wants_generated_audio(spec: JobSpec) -> bool:
    """True when the output needs a soundtrack that no input track provides."""
    return bool(spec.audio) and spec.audio_key is None


def fit_samples(samples: np.ndarray, n: int) -> np.ndarray:
    """``samples`` (channels, m) cut, or padded with silence, to exactly ``n`` samples."""
    if samples.shape[1] >= n:
        return samples[:, :n]
    return np.pad(samples, ((0, 0), (0, n - samples.shape[1])))


def place_pipeline(pipe: Any, device: Any, mode: str) -> None:
    """Put a diffusers pipeline on ``device``: ``none`` resident, ``model`` (each component on the GPU
    only while it runs) or ``group`` (weights stay in CPU memory and stream in block by block, so no
    component, the text encoder included, is ever resident: the plan for a 24 GB GPU). CPU: resident."""
    import torch

    if device.type != "cuda" or mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "group":
        from diffusers.hooks import apply_group_offloading

        for name, module in pipe.components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            block = name == "transformer"  # the big one: one block at a time; the rest layer by layer
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="block_level" if block else "leaf_level", use_stream=True,
                                   num_blocks_per_group=1 if block else None)
    else:
        raise ValueError(f"unknown audio offload mode {mode!r}")


def auto_offload(mode: str, device: Any, *, resident_from_gib: int, small: str, large: str = "none") -> str:
    """``mode`` unless it is ``auto``; then ``large`` on a CUDA device of at least ``resident_from_gib``
    GiB, ``small`` below that, and ``none`` (resident) off CUDA."""
    if mode != "auto":
        return mode
    if device.type != "cuda":
        return "none"
    import torch

    return large if torch.cuda.get_device_properties(device).total_memory >= resident_from_gib * 2**30 else small


def load_audio_pipeline(cls: Any, root: Path, dtype: Any, device: Any, offload: str, what: str) -> Any:
    """``cls.from_pretrained(root)`` (a diffusers pipeline directory: ``model_index.json``), quiet, placed
    on ``device`` with ``offload`` (:func:`place_pipeline`)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    if not (root / "model_index.json").is_file():
        raise FileNotFoundError(f"no diffusers {what} pipeline (model_index.json) in {root}")
    pipe = cls.from_pretrained(root, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    place_pipeline(pipe, device, offload)
    return pipe


def generate_tracks(backend: AudioBackend, spec: JobSpec, videos: list[np.ndarray], seeds: list[int],
                    on_step: OnStep = no_progress) -> list[AudioTrack | None]:
    """One track per video, exactly as long as it, with progress counted over all of them."""
    total = backend.steps * len(videos)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        on_step(done, total, STAGE)

    rate = backend.sample_rate
    tracks: list[AudioTrack | None] = []
    for video, seed in zip(videos, seeds):
        seconds = video.shape[0] / spec.fps
        wave = backend.generate(video, float(spec.fps), spec.positive_prompt, spec.negative_prompt or "",
                                seconds, int(seed), tick)
        samples = fit_samples(np.asarray(wave, dtype=np.float32), round(seconds * rate))
        tracks.append(AudioTrack(samples=samples, rate=rate))
    return tracks


class AudioVideoPipeline:
    """A ``VideoPipeline`` plus the native-audio stage; see the module docstring."""

    def __init__(self, video: VideoPipeline, audio: AudioBackend) -> None:
        self.video = video
        self.audio = audio
        self.name = video.name

    def load(self) -> None:
        self.video.load()
        self.audio.load()

    def generate(self, spec: JobSpec, on_step: OnStep = no_progress, *,
                 image: Image.Image | None = None) -> GenerationResult:
        result = self.video.generate(spec, on_step, image=image)
        if wants_generated_audio(spec) and not any(t is not None for t in result.audio):
            result.audio = generate_tracks(self.audio, spec, result.videos, result.seeds, on_step)
            result.info["audio"] = {"model": self.audio.name, "conditioning": self.audio.conditioning,
                                    "steps": self.audio.steps, "rate": self.audio.sample_rate}
        return result

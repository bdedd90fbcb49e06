"""Native audio: a video-to-audio stage that runs LTX-2 (diffusers ``LTX2ConditionPipeline``) after the video.

LTX-2 is a joint audio+video diffusion transformer: its audio tokens attend to its video tokens
in every block. Here it *listens to a finished video*: the whole Wan clip is passed as one
``LTX2VideoCondition`` at latent index 0 with strength 1.0, which sets the conditioning mask to 1
on every video token, so the video tokens stay the clean VAE encoding of our frames (timestep 0,
never stepped) while the audio tokens are denoised from noise under the prompt. The soundtrack
is therefore conditioned on the prompt *and* on the picture, frame by frame, through the model's
own audio-video cross-attention. Nothing of LTX-2 is re-implemented; this module only prepares
the frames and cuts the waveform.

Guarantees of :meth:`LTX2AudioStage.generate`:

* one :class:`AudioTrack` per video, float32 ``(2, n)`` at the vocoder's rate (24 kHz for LTX-2,
  16 kHz for the tiny model) with ``n = round(frames / fps * rate)``: exactly as long as the
  video (the encoder resamples to 48 kHz and muxes AAC or Opus);
* a track depends only on its video, the prompt and its result's seed (noise from a CPU generator);
* ``on_step(step, total, "audio")`` after every denoising step, ``total = steps x videos``; raising
  from it (``JobCancelled``) stops the stage.

The video is shown to LTX-2 downscaled (at most ``recipe.max_area`` pixels, sides multiples of
32), at its own fps (LTX-2 positions are in seconds), padded with copies of its last frame to the
8k+1 frames its VAE needs and at least one frame past the end, so the audio never comes out short.

:class:`AudioVideoPipeline` wraps any ``VideoPipeline``: the audio stage runs only when the spec
asks for sound (``spec.audio``), no input track was supplied (``spec.audio_key`` is None: that
track is the soundtrack, muxed by the worker) and the video pipeline made none itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.utils import logging as diffusers_logging

from wanflash.pipelines.base import AudioTrack, GenerationResult, OnStep, VideoPipeline, no_progress
from wanflash.pipelines.postprocess import fit_video
from wanflash.pipelines.profiles import grid_size
from wanflash.pipelines.wan import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import Settings
    from wanflash.jobs.model import JobSpec

STAGE = "audio"

# Every guidance term off: one transformer pass per step (the tiny model has nothing to guide).
NO_GUIDANCE = {"guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0, "audio_stg_scale": 0.0,
               "modality_scale": 1.0, "audio_modality_scale": 1.0}


@dataclass(frozen=True)
class AudioRecipe:
    """How the stage calls one family of LTX-2 weights."""

    name: str
    steps: int
    max_area: int  # the video is shown to LTX-2 at most this many pixels per frame
    max_sequence_length: int  # prompt tokens
    call: dict[str, Any] = field(default_factory=dict)  # extra pipeline arguments (guidance)


RECIPES: dict[str, AudioRecipe] = {
    "tiny": AudioRecipe("tiny-ltx2", steps=2, max_area=32 * 32, max_sequence_length=16, call=NO_GUIDANCE),
    # The pipeline's own guidance defaults (CFG, STG, modality isolation) for the full LTX-2 model.
    "ltx2": AudioRecipe("ltx2", steps=30, max_area=768 * 512, max_sequence_length=1024),
}


def wants_generated_audio(spec: JobSpec) -> bool:
    """True when the output needs a soundtrack that no input track provides."""
    return bool(spec.audio) and spec.audio_key is None


def conditioning_frames(video: np.ndarray, temporal_ratio: int) -> np.ndarray:
    """``video`` padded with copies of its last frame to ``temporal_ratio * k + 1`` frames, at least one more."""
    n = video.shape[0] + 1
    target = -(-(n - 1) // temporal_ratio) * temporal_ratio + 1
    return np.concatenate([video, np.repeat(video[-1:], target - video.shape[0], axis=0)])


def fit_samples(samples: np.ndarray, n: int) -> np.ndarray:
    """``samples`` (channels, m) cut, or padded with silence, to exactly ``n`` samples."""
    if samples.shape[1] >= n:
        return samples[:, :n]
    return np.pad(samples, ((0, 0), (0, n - samples.shape[1])))


class LTX2AudioStage:
    """Video-to-audio with LTX-2 held on the finished frames; see the module docstring."""

    def __init__(self, settings: Settings, root: Path, recipe: AudioRecipe) -> None:
        self.settings = settings
        self.root = Path(root)
        self.recipe = recipe
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.pipe: LTX2ConditionPipeline | None = None

    def load(self) -> None:
        if self.pipe is not None:
            return
        diffusers_logging.disable_progress_bar()
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        if not (self.root / "model_index.json").is_file():
            raise FileNotFoundError(f"no diffusers LTX-2 pipeline (model_index.json) in {self.root}")
        pipe = LTX2ConditionPipeline.from_pretrained(self.root, dtype=self.dtype)
        pipe.set_progress_bar_config(disable=True)
        offload = self.settings.audio_cpu_offload if self.device.type == "cuda" else "none"
        if offload == "model":
            # Usually next to a Wan model on the same GPU: each part is on the GPU only while it runs.
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self.pipe = pipe

    @property
    def steps(self) -> int:
        return self.settings.audio_steps or self.recipe.steps

    @property
    def sample_rate(self) -> int:
        if self.pipe is None:
            raise RuntimeError("call load() before sample_rate")
        return int(self.pipe.vocoder.config.output_sampling_rate)

    def generate(self, spec: JobSpec, videos: list[np.ndarray], seeds: list[int],
                 on_step: OnStep = no_progress) -> list[AudioTrack]:
        if self.pipe is None:
            raise RuntimeError("call load() before generate()")
        pipe = self.pipe
        steps = self.steps
        total = steps * len(videos)
        done = 0

        def step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            on_step(done, total, STAGE)
            return kwargs

        rate = self.sample_rate
        tracks = []
        for video, seed in zip(videos, seeds):
            frames, height, width = video.shape[:3]
            cw, ch = grid_size(width, height, grid=32, max_area=self.recipe.max_area)
            # Downscale on the CPU first: the pipeline would otherwise move full-size float frames to the GPU.
            cond = conditioning_frames(fit_video(video, cw, ch), pipe.vae_temporal_compression_ratio)
            with torch.inference_mode():
                out = pipe(
                    conditions=[LTX2VideoCondition(frames=cond, index=0, strength=1.0)],
                    prompt=spec.positive_prompt, negative_prompt=spec.negative_prompt or "",
                    height=ch, width=cw, num_frames=cond.shape[0], frame_rate=float(spec.fps),
                    num_inference_steps=steps, max_sequence_length=self.recipe.max_sequence_length,
                    generator=torch.Generator("cpu").manual_seed(int(seed)),
                    output_type="np", callback_on_step_end=step, **self.recipe.call,
                )
            wave = out.audio[0].float().cpu().numpy()
            tracks.append(AudioTrack(samples=fit_samples(wave, int(round(frames / spec.fps * rate))), rate=rate))
        return tracks


class AudioVideoPipeline:
    """A ``VideoPipeline`` plus the native-audio stage; see the module docstring."""

    def __init__(self, video: VideoPipeline, audio: LTX2AudioStage) -> None:
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
            result.audio = self.audio.generate(spec, result.videos, result.seeds, on_step)
            result.info["audio"] = {"model": self.audio.recipe.name, "conditioning": "video+prompt",
                                    "steps": self.audio.steps, "rate": self.audio.sample_rate}
        return result

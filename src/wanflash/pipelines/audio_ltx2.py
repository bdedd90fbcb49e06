"""The ``ltx2`` audio backend: video-to-audio with LTX-2 (diffusers ``LTX2ConditionPipeline``), cut down.

LTX-2 is a joint audio+video diffusion transformer: its audio tokens attend to its video tokens in
every block. Here it *listens to a finished video*: the whole Wan clip is one ``LTX2VideoCondition``
at latent index 0 with strength 1.0, so every video token stays the clean VAE encoding of our frames
(timestep 0) while the audio tokens are denoised from noise under the prompt. The sound therefore
follows the picture, frame by frame, and the prompt. Nothing of LTX-2 is re-implemented.

What it does *not* do, because the stage only needs the audio:

* no video decode: the pipeline returns latents (``output_type="latent"``) and only the audio
  latents are decoded (audio VAE, vocoder); LTX-2's video VAE decoder never runs;
* the distilled schedule by default (``WANFLASH_AUDIO_LTX2_VARIANT=distilled``): the 8 published
  distilled sigmas (``diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES``) with every guidance
  term off, one transformer pass per step, instead of 30 steps x (CFG pair + STG + modality pass);
  it needs distilled weights (e.g. ``diffusers/LTX-2.3-Distilled-Diffusers``). ``dev`` keeps the
  pipeline's full guided 30-step recipe for the non-distilled checkpoint;
* the video is shown downscaled (distilled: at most 384x256 pixels; dev: 768x512), the main cost
  lever since video tokens outnumber audio tokens ~50:1;
* the prompt is encoded once per job (cached), not once per result, so with offloading the 12B
  Gemma text encoder visits the GPU once per job and is never resident; with ``group`` offload (the
  default below 60 GiB of GPU memory) no component is resident, which is the plan for a 24 GB GPU.

The clip is padded with copies of its last frame to the 8k+1 frames LTX-2's VAE needs and at least
one frame past the end, at its own fps (LTX-2 positions are in seconds), so the audio never comes
out short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

from wanflash.pipelines.audio import StepTick, auto_offload, load_audio_pipeline
from wanflash.pipelines.postprocess import fit_video
from wanflash.pipelines.profiles import grid_size
from wanflash.pipelines.wan import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from wanflash.config import AudioConfig

# Every guidance term off: one transformer pass per step (what the distilled weights are trained for).
NO_GUIDANCE = {"guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0, "audio_stg_scale": 0.0,
               "modality_scale": 1.0, "audio_modality_scale": 1.0}


@dataclass(frozen=True)
class LTX2Recipe:
    """How the backend calls one family of LTX-2 weights."""

    name: str
    steps: int
    max_area: int  # the video is shown to LTX-2 at most this many pixels per frame
    max_sequence_length: int  # prompt tokens
    sigmas: tuple[float, ...] | None = None  # a fixed schedule (distilled); None: num_inference_steps
    call: dict[str, Any] = field(default_factory=dict)  # extra pipeline arguments (guidance)

    @property
    def guided(self) -> bool:
        return self.call.get("guidance_scale", 3.0) > 1.0


RECIPES: dict[str, LTX2Recipe] = {
    "distilled": LTX2Recipe("ltx2-distilled", steps=len(DISTILLED_SIGMA_VALUES), max_area=384 * 256,
                            max_sequence_length=1024, sigmas=tuple(DISTILLED_SIGMA_VALUES), call=NO_GUIDANCE),
    # The pipeline's own guidance defaults (CFG, STG, modality isolation) for the non-distilled model.
    "dev": LTX2Recipe("ltx2-dev", steps=30, max_area=768 * 512, max_sequence_length=1024),
    # The tiny random LTX-2: the distilled code path (fixed sigmas, no guidance) on 32x32 frames.
    "tiny": LTX2Recipe("tiny-ltx2", steps=len(DISTILLED_SIGMA_VALUES), max_area=32 * 32, max_sequence_length=16,
                       sigmas=tuple(DISTILLED_SIGMA_VALUES), call=NO_GUIDANCE),
}


def conditioning_frames(video: np.ndarray, temporal_ratio: int) -> np.ndarray:
    """``video`` padded with copies of its last frame to ``temporal_ratio * k + 1`` frames, at least one more."""
    n = video.shape[0] + 1
    target = -(-(n - 1) // temporal_ratio) * temporal_ratio + 1
    return np.concatenate([video, np.repeat(video[-1:], target - video.shape[0], axis=0)])


class LTX2AudioBackend:
    """``AudioBackend`` over LTX-2 held on the finished frames; see the module docstring."""

    conditioning = "video+prompt"

    def __init__(self, config: AudioConfig, root: Path, recipe: LTX2Recipe, *, device: str = "auto",
                 dtype: str = "auto") -> None:
        self.config = config
        self.root = Path(root)
        self.recipe = recipe
        self.name = recipe.name
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pipe: LTX2ConditionPipeline | None = None
        self._embeds: tuple[tuple[str, str], dict[str, torch.Tensor]] | None = None

    @property
    def offload(self) -> str:
        """``auto``: ``model`` on a GPU of 60 GiB or more (each part moves in once per clip), else ``group``
        (nothing resident: fits 24 GB, at the price of streaming the 19B transformer every step)."""
        return auto_offload(self.config.cpu_offload, self.device, resident_from_gib=60, small="group",
                            large="model")

    def load(self) -> None:
        if self.pipe is not None:
            return
        self.pipe = load_audio_pipeline(LTX2ConditionPipeline, self.root, self.dtype, self.device, self.offload,
                                        "LTX-2")

    @property
    def steps(self) -> int:
        if self.recipe.sigmas is not None:
            return len(self.recipe.sigmas)  # a fixed, published schedule: WANFLASH_AUDIO_STEPS does not apply
        return self.config.steps or self.recipe.steps

    @property
    def sample_rate(self) -> int:
        if self.pipe is None:
            raise RuntimeError("call load() before sample_rate")
        return int(self.pipe.vocoder.config.output_sampling_rate)

    def _prompt_embeds(self, prompt: str, negative_prompt: str) -> dict[str, torch.Tensor]:
        """The text encoder's output for this prompt, computed once per job (every result shares it)."""
        if self.pipe is None:
            raise RuntimeError("call load() before generate()")
        key = (prompt, negative_prompt)
        if self._embeds is None or self._embeds[0] != key:
            guided = self.recipe.guided
            with torch.inference_mode():
                pe, pm, ne, nm = self.pipe.encode_prompt(
                    prompt, negative_prompt if guided else None, do_classifier_free_guidance=guided,
                    max_sequence_length=self.recipe.max_sequence_length, device=self.pipe._execution_device)
            embeds = {"prompt_embeds": pe, "prompt_attention_mask": pm}
            if guided:
                embeds |= {"negative_prompt_embeds": ne, "negative_prompt_attention_mask": nm}
            self._embeds = (key, embeds)
        return self._embeds[1]

    def generate(self, frames: np.ndarray, fps: float, prompt: str, negative_prompt: str, seconds: float,
                 seed: int, on_step: StepTick) -> np.ndarray:
        if self.pipe is None:
            raise RuntimeError("call load() before generate()")
        pipe = self.pipe

        def step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step()
            return kwargs

        _, height, width = frames.shape[:3]
        cw, ch = grid_size(width, height, grid=32, max_area=self.recipe.max_area)
        # Downscale on the CPU first: the pipeline would otherwise move full-size float frames to the GPU.
        cond = conditioning_frames(fit_video(frames, cw, ch), pipe.vae_temporal_compression_ratio)
        schedule = ({"sigmas": list(self.recipe.sigmas)} if self.recipe.sigmas is not None
                    else {"num_inference_steps": self.steps})
        with torch.inference_mode():
            out = pipe(
                conditions=[LTX2VideoCondition(frames=cond, index=0, strength=1.0)],
                height=ch, width=cw, num_frames=cond.shape[0], frame_rate=fps,
                max_sequence_length=self.recipe.max_sequence_length,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="latent", callback_on_step_end=step,
                **self._prompt_embeds(prompt, negative_prompt), **schedule, **self.recipe.call,
            )
            # The video latents are dropped undecoded; only the sound goes through its decoders.
            latents = out.audio.to(pipe.audio_vae.dtype)
            mel = pipe.audio_vae.decode(latents, return_dict=False)[0]
            wave = pipe.vocoder(mel)
        return wave[0].float().cpu().numpy()

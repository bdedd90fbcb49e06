"""The ``ace-step`` audio backend (the default): ACE-Step 1.5 turbo through diffusers ``AceStepPipeline``.

Why it is the default: it is the one audio generator we found that a commercial operator may run
without a revenue cap or field-of-use clause (ACE-Step 1.5 is MIT, its text encoder
Qwen3-Embedding-0.6B Apache-2.0), that a well-kept library packages (diffusers 0.42.1), and that is
cheap next to the video (a ~1.6B DiT over 25 latent frames per second, 8 steps, no guidance). The
README's *Audio* section has the evidence and the candidates that lost.

What it is not: a video-to-audio model. It is text-to-music, so the track **follows the words, not
the picture**: an instrumental bed for the prompt (``lyrics="[Instrumental]"``), with no sound
effects timed to what happens on screen and no speech. ``ltx2`` is the backend that hears the picture.

ACE-Step is trained on clips of 10 s and more, so shorter clips are generated 10 s long and cut by
the stage; a 50 ms fade-out at the cut avoids a click.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import AceStepPipeline

from wanflash.pipelines.audio import StepTick, auto_offload, load_audio_pipeline
from wanflash.pipelines.wan import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from wanflash.config import AudioConfig

MIN_SECONDS = 10.0  # ACE-Step 1.5 generates 10 s to 10 min
FADE_SECONDS = 0.05
TURBO_STEPS = 8  # the turbo (guidance-distilled) checkpoints' schedule
INSTRUMENTAL = "[Instrumental]"


class AceStepAudioBackend:
    """``AudioBackend`` over ACE-Step 1.5 (turbo); see the module docstring."""

    conditioning = "prompt"

    def __init__(self, config: AudioConfig, root: Path, *, device: str = "auto", dtype: str = "auto",
                 name: str = "ace-step-1.5", default_steps: int = TURBO_STEPS) -> None:
        self.config = config
        self.root = Path(root)
        self.name = name
        self.default_steps = default_steps
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pipe: AceStepPipeline | None = None

    @property
    def offload(self) -> str:
        """``auto``: resident (~3B parameters, ~6 GB in bf16) on a GPU of 40 GiB or more; below that each
        component visits the GPU only while it runs, leaving the memory to the video model's plan."""
        return auto_offload(self.config.cpu_offload, self.device, resident_from_gib=40, small="model")

    def load(self) -> None:
        if self.pipe is not None:
            return
        self.pipe = load_audio_pipeline(AceStepPipeline, self.root, self.dtype, self.device, self.offload, "ACE-Step")

    @property
    def steps(self) -> int:
        return self.config.steps or self.default_steps

    @property
    def sample_rate(self) -> int:
        if self.pipe is None:
            raise RuntimeError("call load() before sample_rate")
        return int(self.pipe.sample_rate)

    def generate(self, frames: np.ndarray, fps: float, prompt: str, negative_prompt: str, seconds: float,
                 seed: int, on_step: StepTick) -> np.ndarray:
        # frames and fps are unused: ACE-Step hears only the prompt (see the module docstring).
        if self.pipe is None:
            raise RuntimeError("call load() before generate()")

        def step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step()
            return kwargs

        length = max(float(seconds), MIN_SECONDS)
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompt, lyrics=INSTRUMENTAL, audio_duration=length, num_inference_steps=self.steps,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="pt",
                callback_on_step_end=step,
                # Turbo weights have guidance distilled in (the pipeline ignores the scale, with a warning);
                # base/SFT checkpoints keep the pipeline's default guidance.
                **({"guidance_scale": 1.0} if self.pipe.is_turbo else {}),
            )
        wave = out.audios[0].float().cpu().numpy()
        end = round(seconds * self.sample_rate)
        if wave.shape[1] > end:
            fade = min(end, int(FADE_SECONDS * self.sample_rate))
            wave = wave[:, :end].copy()
            wave[:, end - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return wave

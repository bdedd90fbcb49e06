"""What each engine profile is and does, as plain data (no torch import).

A profile names a family of diffusers-format weights and states everything the engine and the API
need from it, so no other module compares profile names: native fps, how many frames one clip may
have (Wan needs 4n+1), the size grid and the largest area it generates at before resizing; how its
weights are found (``loader``), which audio recipe goes with it, whether it takes distilled LoRAs;
the pipeline flags it needs (``expand_timesteps``, the experts' ``boundary_ratio``), stated here
rather than trusted from a ``model_index.json`` (few-step 5B checkpoints ship indexes without
``expand_timesteps``); and the sampler its few-step weights were distilled with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Sampler:
    """How the denoising timesteps are chosen.

    ``kind="checkpoint"``: the scheduler saved with the weights (``scheduler/``), asked for
    ``steps`` steps. ``kind="flow-euler-distill"``: Euler flow matching on a fixed list of
    training timesteps, the way lightx2v's step-distillation samples: sigmas
    ``t / 1000`` for ``t`` in ``denoising_steps``, shifted by ``shift`` (``s * x / (1 + (s - 1) x)``),
    then 0. ``timesteps`` is what the transformer is called with, pinned by a test.
    """

    kind: Literal["checkpoint", "flow-euler-distill"]
    timesteps: tuple[float, ...]  # what the transformer sees, step by step
    shift: float | None = None
    denoising_steps: tuple[int, ...] | None = None  # the distillation's step list (before the shift)
    source: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    fps: int
    max_clip_frames: int  # longest single generation, 4n+1
    steps: int
    guidance_scale: float
    grid: int  # generated width/height are multiples of this
    max_area: int  # generate at most this many pixels per frame, then resize to the request
    description: str
    sampler: Sampler
    loader: Literal["tiny", "weights"] = "weights"  # tiny: built offline; weights: WANFLASH_WEIGHTS_DIR
    # tiny: the audio backend's tiny twin, built offline; weights: its WANFLASH_AUDIO_WEIGHTS_DIR
    audio_loader: Literal["tiny", "weights"] = "weights"
    uses_loras: bool = False  # distilled LoRAs from WANFLASH_LORA_DIR, fused into every expert at load
    expand_timesteps: bool = False  # Wan2.2 TI2V: per-token timesteps, image latents in the first frame
    boundary_ratio: float | None = None  # image-to-video experts' switch (None: one transformer)
    t2v_boundary_ratio: float | None = None  # the t2v/ directory's experts' switch
    t2v: Literal["directory", "same-transformer"] = "directory"  # where text-to-video comes from

    def generation_size(self, width: int, height: int) -> tuple[int, int]:
        """Nearest on-grid size with the request's aspect ratio and at most ``max_area`` pixels."""
        return grid_size(width, height, grid=self.grid, max_area=self.max_area)


def grid_size(width: int, height: int, *, grid: int, max_area: int) -> tuple[int, int]:
    """Nearest size on a ``grid`` with the aspect ratio of ``width x height``, at most ``max_area`` pixels."""
    scale = min(1.0, (max_area / float(width * height)) ** 0.5)
    gw = max(grid, int(round(width * scale / grid)) * grid)
    gh = max(grid, int(round(height * scale / grid)) * grid)
    return gw, gh


# lightx2v's Wan2.2 A14B 4-step distillation (Wan2.2-Distill-Loras, Wan2.2-Lightning): configs
# configs/distill/wan22/wan_moe_{i2v,t2v}_distill_lora.json ("sample_shift": 5.0,
# "denoising_step_list": [1000, 750, 500, 250], "enable_cfg": false, "boundary_step_index": 2) and
# lightx2v/models/schedulers/wan/step_distill/scheduler.py (Euler on those steps, shifted).
LIGHTX2V_4STEP = Sampler(
    kind="flow-euler-distill", shift=5.0, denoising_steps=(1000, 750, 500, 250),
    timesteps=(1000.0, 937.5, 2500.0 / 3.0, 625.0),
    source="lightx2v step distillation: Euler flow matching, shift 5, steps [1000, 750, 500, 250], no CFG",
)

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        fps=16,
        max_clip_frames=81,
        steps=2,
        guidance_scale=1.0,
        grid=16,
        max_area=64 * 48,
        description="random-weight Wan built offline from configs; output is noise; CPU in seconds",
        # The tiny model's own UniPC (flow_shift 3), 2 steps.
        sampler=Sampler(kind="checkpoint", timesteps=(999.0, 750.0), source="the tiny model's UniPC, flow_shift 3"),
        loader="tiny",
        audio_loader="tiny",
        boundary_ratio=0.875,
        t2v_boundary_ratio=0.875,
    ),
    "wan2.2-ti2v-5b": Profile(
        name="wan2.2-ti2v-5b",
        fps=24,
        max_clip_frames=121,
        steps=4,
        guidance_scale=1.0,
        grid=32,
        max_area=1280 * 704,
        description="Wan2.2-TI2V-5B with few-step distilled weights (3-4 steps, no CFG)",
        # Few-step 5B checkpoints differ in how they were distilled; the checkpoint's scheduler is
        # used as shipped (the published one: UniPC, flow_shift 5).
        sampler=Sampler(kind="checkpoint", timesteps=(999.0, 937.0, 833.0, 625.0),
                        source="the checkpoint's scheduler/ (published: UniPC, flow_shift 5)"),
        expand_timesteps=True,
        t2v="same-transformer",
    ),
    "wan2.2-i2v-a14b": Profile(
        name="wan2.2-i2v-a14b",
        fps=16,
        max_clip_frames=81,
        steps=4,
        guidance_scale=1.0,
        grid=16,
        max_area=1280 * 720,
        description="Wan2.2-I2V-A14B, two experts with 4-step distilled LoRAs or weights",
        sampler=LIGHTX2V_4STEP,
        uses_loras=True,
        boundary_ratio=0.9,  # Wan2.2-I2V-A14B's model_index; the high-noise expert takes t >= 900
        t2v_boundary_ratio=0.875,  # Wan2.2-T2V-A14B's
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def wan_frames(n: int) -> int:
    """Smallest 4k+1 frame count that is >= n (Wan's VAE has temporal stride 4)."""
    if n <= 1:
        return 1
    return ((n - 1 + 3) // 4) * 4 + 1


def plan_segments(total_frames: int, max_clip_frames: int) -> list[int]:
    """Split ``total_frames`` output frames into generation clips of 4k+1 frames each.

    Each clip after the first starts from the previous clip's last frame, so that frame is
    generated twice and dropped once: a chain of clips c1..cn yields c1 + sum(ci - 1) frames.
    Returns the 4k+1 length to generate for each clip; the caller trims the surplus tail.
    """
    if total_frames <= 0:
        raise ValueError("total_frames must be positive")
    clips: list[int] = []
    have = 0
    while have < total_frames:
        need = total_frames - have + (1 if clips else 0)
        clip = min(max_clip_frames, wan_frames(need))
        clips.append(clip)
        have += clip - (1 if len(clips) > 1 else 0)
    return clips

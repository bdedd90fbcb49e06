"""What each engine profile can do, as plain data (no torch import).

A profile names a family of diffusers-format weights and states the facts the API needs to
plan a job: native fps, how many frames one clip may have (Wan needs 4n+1), the size grid and
the largest area it generates at before resizing to the requested size.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def generation_size(self, width: int, height: int) -> tuple[int, int]:
        """Nearest on-grid size with the request's aspect ratio and at most ``max_area`` pixels."""
        return grid_size(width, height, grid=self.grid, max_area=self.max_area)


def grid_size(width: int, height: int, *, grid: int, max_area: int) -> tuple[int, int]:
    """Nearest size on a ``grid`` with the aspect ratio of ``width x height``, at most ``max_area`` pixels."""
    scale = min(1.0, (max_area / float(width * height)) ** 0.5)
    gw = max(grid, int(round(width * scale / grid)) * grid)
    gh = max(grid, int(round(height * scale / grid)) * grid)
    return gw, gh


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

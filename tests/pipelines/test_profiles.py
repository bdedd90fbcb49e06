"""Profile facts and the frame plan (pure data, no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wanflash.pipelines.profiles import PROFILES, get_profile, plan_segments, wan_frames


@pytest.mark.parametrize("n,expected", [(1, 1), (2, 5), (5, 5), (6, 9), (80, 81), (81, 81), (82, 85), (120, 121)])
def test_wan_frames_rounds_up_to_4n_plus_1(n: int, expected: int) -> None:
    assert wan_frames(n) == expected
    assert (wan_frames(n) - 1) % 4 == 0


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@pytest.mark.parametrize("seconds", [2, 5, 6, 10, 15])
def test_segments_cover_the_clip(profile, seconds: int) -> None:  # type: ignore[no-untyped-def]
    total = seconds * profile.fps
    clips = plan_segments(total, profile.max_clip_frames)
    assert all((c - 1) % 4 == 0 and c <= profile.max_clip_frames for c in clips)
    produced = clips[0] + sum(c - 1 for c in clips[1:])  # later clips repeat their first frame
    assert total <= produced < total + 4 * len(clips) + 1
    if total <= profile.max_clip_frames:
        assert len(clips) == 1


def test_generation_size_keeps_grid_and_area() -> None:
    tiny = get_profile("tiny")
    for w, h in [(1280, 720), (720, 1280), (1920, 1080), (1440, 1440), (1248, 1632)]:
        gw, gh = tiny.generation_size(w, h)
        assert gw % tiny.grid == 0 and gh % tiny.grid == 0
        assert gw * gh <= tiny.max_area * 1.5
    a14b = get_profile("wan2.2-i2v-a14b")
    assert a14b.generation_size(1280, 720) == (1280, 720)
    assert a14b.generation_size(1920, 1080) == (1280, 720)


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("wan3")


def test_api_side_imports_do_not_load_torch() -> None:
    code = (
        "import sys, wanflash.contract.validation, wanflash.pipelines.profiles, wanflash.pipelines.fake, wanflash.cli; "
        "sys.exit(1 if 'torch' in sys.modules or 'diffusers' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

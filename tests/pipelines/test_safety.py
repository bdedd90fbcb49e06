"""Content safety: frame sampling (fast = 1 per second, full = all), the per-job check (input
image first, per-result flags, withhold), the never-silent failure modes, and the real detector
code (transformers classifier, diffusers CLIP safety checker, NudeNet when installed) run on
images drawn in the test."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.pipelines.safety_models import build_classifier, build_clip_checker
from wanflash import MODEL_ID
from wanflash.config import Settings
from wanflash.errors import JobFailed
from wanflash.jobs.model import JobSpec
from wanflash.pipelines.detectors import ClassifierDetector, ClipSafetyDetector
from wanflash.pipelines.safety import (
    ContentChecker,
    ContentDetector,
    SafetyRun,
    create_checker,
    sample_frame_indices,
)

# -- images drawn by the test -------------------------------------------------------------------

def warm(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A warm, smooth picture (the 'flag' class of the tiny detectors)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array([225, 170, 140]) - 40 * y
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def stripes(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """Cool, high-contrast stripes (the 'pass' class)."""
    rng = np.random.default_rng(seed)
    x = (np.arange(w) // 8 % 2)[None, :, None]
    base = np.where(x, np.array([20, 90, 200]), np.array([200, 230, 250])) * np.ones((h, 1, 1))
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


FLAG = [warm(i) for i in range(3)]
OK = [stripes(i) for i in range(3)]


class RedDetector(ContentDetector):
    """Flags frames whose mean red channel is above 150; counts what it was shown."""

    name = "red"

    def __init__(self) -> None:
        self.seen = 0
        self.loads = 0

    def load(self) -> None:
        self.loads += 1

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        self.seen += len(frames)
        return [float(np.asarray(f)[..., 0].mean()) > 150 for f in frames]


def spec(mode: str = "fast", *, check: bool = True) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt="p", width=64,
                   height=48, resolution_class="720p", duration=5, fps=16, num_frames=80, seeds=[1, 2],
                   number_results=2, cost=0.0, safety_check=check, safety_mode=mode)  # type: ignore[arg-type]


def video(red_frames: Sequence[int] = (), n: int = 80) -> np.ndarray:
    v = np.full((n, 48, 64, 3), 40, np.uint8)
    for i in red_frames:
        v[i, ..., 0] = 255
    return v


# -- frame sampling -----------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [16, 24])
@pytest.mark.parametrize("frames", [1, 15, 16, 17, 32, 33, 80, 81, 240, 360])
def test_fast_is_one_key_frame_per_second(frames: int, fps: int) -> None:
    picks = sample_frame_indices(frames, fps, "fast")
    assert len(picks) == math.ceil(frames / fps)
    assert [p // fps for p in picks] == list(range(len(picks)))  # exactly one in every second
    assert all(0 <= p < frames for p in picks)
    assert sample_frame_indices(frames, fps, "full") == list(range(frames))
    assert sample_frame_indices(frames, fps, "none") == []


def test_fast_picks_the_middle_of_each_second() -> None:
    assert sample_frame_indices(80, 16, "fast") == [8, 24, 40, 56, 72]
    assert sample_frame_indices(36, 16, "fast") == [8, 24, 34]  # the last 4 frames: their middle


# -- the per-job check ---------------------------------------------------------------------------

def test_fast_and_full_check_what_they_should() -> None:
    for mode, per_video in (("fast", 5), ("full", 80)):
        det = RedDetector()
        run = SafetyRun.start(ContentChecker(det, withhold=False), spec(mode), None)
        steps: list[tuple[int, int, str]] = []
        info = run.finish([video(), video([9, 70])], fps=16, on_step=lambda *a, steps=steps: steps.append(a))
        assert info is not None and det.seen == 2 * per_video
        assert [r["framesChecked"] for r in info["results"]] == [per_video, per_video]
        assert steps[-1] == (2 * per_video, 2 * per_video, "safety")
        # fast looks at frames 8, 24, 40, 56, 72 only: the red frames 9 and 70 are between key frames.
        assert [r["NSFWContent"] for r in info["results"]] == [False, mode == "full"]
        assert info["results"][1]["flaggedFrames"] == ([9, 70] if mode == "full" else [])
        assert info["input"] is None and info["detector"] == "red" and info["mode"] == mode


def test_withhold_fails_the_task_naming_the_frames() -> None:
    run = SafetyRun.start(ContentChecker(RedDetector(), withhold=True), spec("fast"), None)
    with pytest.raises(JobFailed) as exc:
        run.finish([video(), video([24])], fps=16)
    assert exc.value.code == "nsfwContentDetected" and "result 2: frames [24]" in exc.value.message
    clean = SafetyRun.start(ContentChecker(RedDetector(), withhold=True), spec("fast"), None)
    info = clean.finish([video(), video()], fps=16)
    assert info is not None and [r["NSFWContent"] for r in info["results"]] == [False, False]


def test_input_image_is_checked_before_generation() -> None:
    red = Image.new("RGB", (32, 24), (250, 10, 10))
    with pytest.raises(JobFailed) as exc:
        SafetyRun.start(ContentChecker(RedDetector(), withhold=True), spec(), red)
    assert exc.value.code == "nsfwContentDetected" and "input image" in exc.value.message
    # Not withheld: generation goes on, and every result says NSFW content was detected.
    det = RedDetector()
    run = SafetyRun.start(ContentChecker(det, withhold=False), spec(), red)
    assert run.input_flag is True and det.seen == 1
    info = run.finish([video(), video()], fps=16)
    assert info is not None and info["input"] is True
    assert [r["NSFWContent"] for r in info["results"]] == [True, True]
    assert [r["flaggedFrames"] for r in info["results"]] == [[], []]
    grey = SafetyRun.start(ContentChecker(RedDetector(), withhold=True), spec(), Image.new("RGB", (8, 8), 90))
    assert grey.input_flag is False


def test_never_a_silent_non_check() -> None:
    # Asked, but no detector configured: refused, not reported as checked.
    with pytest.raises(JobFailed) as exc:
        SafetyRun.start(None, spec("fast"), None)
    assert exc.value.code == "unsupportedSafetyCheck"
    # Not asked: nothing runs, nothing is reported.
    assert SafetyRun.start(None, spec("none", check=False), None).finish([video()], fps=16) is None

    class Broken(RedDetector):
        def load(self) -> None:
            self.loads += 1
            raise OSError("weights missing")

    det = Broken()
    checker = ContentChecker(det)
    for _ in range(2):
        with pytest.raises(JobFailed) as exc:
            SafetyRun.start(checker, spec(), Image.new("RGB", (8, 8)))
        assert exc.value.code == "safetyCheckFailed" and "weights missing" in exc.value.message
    assert det.loads == 1  # the failure is remembered, not retried per job


def test_create_checker_from_settings(tmp_path: Path) -> None:
    assert create_checker(Settings(data_dir=tmp_path).safety) is None
    # Misconfigured: a checker whose jobs fail with the reason (other jobs are unaffected).
    checker = create_checker(Settings(data_dir=tmp_path, safety_detector="classifier").safety)
    assert checker is not None and checker.withhold is True
    with pytest.raises(JobFailed, match="WANFLASH_SAFETY_MODEL_DIR"):
        checker.detect([FLAG[0]])
    built = create_checker(Settings(data_dir=tmp_path, safety_detector="clip", safety_model_dir=tmp_path,
                                    safety_withhold=False).safety)
    assert built is not None and isinstance(built.detector, ClipSafetyDetector) and built.withhold is False


def test_nudenet_missing_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("nudenet") is not None:
        pytest.skip("nudenet is installed here")
    checker = create_checker(Settings(data_dir=tmp_path, safety_detector="nudenet").safety)
    assert checker is not None
    with pytest.raises(JobFailed, match=r"wanflash\[nudenet\]"):
        checker.detect([FLAG[0]])


# -- the real detectors on generated images -------------------------------------------------------

def test_classifier_detector(tmp_path: Path) -> None:
    root = build_classifier(tmp_path / "cls", FLAG, OK)
    det = ClassifierDetector(root, labels=["nsfw", "porn"], threshold=0.5, device="cpu")
    scores = det.scores(FLAG + OK)
    assert all(s > 0.99 for s in scores[:3]) and all(s < 0.01 for s in scores[3:])
    assert det.detect(FLAG + OK) == [True] * 3 + [False] * 3
    # Through the checker, on a video made of those pictures (frames 0-15 warm, 16-31 stripes).
    frames = np.stack([FLAG[0]] * 16 + [OK[0]] * 16)
    run = SafetyRun.start(ContentChecker(det, withhold=False), spec("full"), Image.fromarray(OK[1]))
    info = run.finish([frames], fps=16)
    assert info is not None and info["input"] is False
    assert info["results"][0]["flaggedFrames"] == list(range(16))
    # A checkpoint without any configured label could never flag: refused at load.
    with pytest.raises(ValueError, match="could never flag"):
        ClassifierDetector(root, labels=["explicit"], device="cpu").load()


def test_clip_safety_checker(tmp_path: Path) -> None:
    root = build_clip_checker(tmp_path / "clip", FLAG, OK)
    det = ClipSafetyDetector(root, device="cpu")
    batch = FLAG + OK
    before = [b.copy() for b in batch]
    assert det.detect(batch) == [True] * 3 + [False] * 3
    assert all(np.array_equal(a, b) for a, b in zip(batch, before, strict=True))  # frames untouched


def test_nudenet_runs_offline_when_installed() -> None:
    pytest.importorskip("nudenet")
    from wanflash.pipelines.detectors import NudeNetDetector

    det = NudeNetDetector(threshold=0.5)
    assert det.detect(FLAG + OK) == [False] * 6  # synthetic pictures: nothing anatomical

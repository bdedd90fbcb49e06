"""Content safety (``safety.checkContent`` / ``safety.mode``): frame sampling, the detector
interface, and the per-job check.

* :func:`sample_frame_indices`: ``fast`` checks key frames, one per second (the middle frame of
  every second, the last partial second included); ``full`` checks every frame.
* :class:`ContentDetector` is the small interface every detector implements (``load`` once,
  ``detect`` a batch of RGB frames -> one flag per frame). The implementations live in
  :mod:`wanflash.pipelines.detectors` (the torch / ONNX code) and are chosen by
  ``WANFLASH_SAFETY_DETECTOR``; :func:`create_checker` builds the configured one, unloaded.
* :class:`SafetyRun` is one job's check: the input image before anything is generated, then
  the sampled frames of every result. Each result's ``NSFWContent`` is true when one of its
  checked frames, or the input image, was flagged. With ``safety_withhold`` (the default) a
  flag fails the task with ``nsfwContentDetected`` and nothing is encoded or stored.

Never a silent non-check: a job that asks for checking fails with ``unsupportedSafetyCheck``
when no detector is configured, and with ``safetyCheckFailed`` when the detector cannot load or
run; it is never reported as checked. This module imports no torch.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wanflash.errors import JobCancelled, JobFailed
from wanflash.pipelines.base import OnStep, no_progress

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import SafetyConfig
    from wanflash.jobs.model import JobSpec

log = logging.getLogger(__name__)

SafetyMode = Literal["none", "fast", "full"]
BATCH = 16  # frames per detector call: bounded memory whatever the clip length
STAGE = "safety"


def sample_frame_indices(num_frames: int, fps: int, mode: SafetyMode) -> list[int]:
    """The frames ``mode`` checks, in order: none; one per second (``fast``); all (``full``)."""
    if num_frames <= 0 or mode == "none":
        return []
    if mode == "full":
        return list(range(num_frames))
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    seconds = math.ceil(num_frames / fps)
    # The middle of each second (of the last, partial one too): a key frame that represents it.
    picks = [min(num_frames - 1, s * fps + min(fps, num_frames - s * fps) // 2) for s in range(seconds)]
    return sorted(set(picks))


class ContentDetector(ABC):
    """An offline NSFW detector. ``detect`` returns one flag per (H, W, 3) uint8 RGB frame."""

    name: str = "detector"

    @abstractmethod
    def load(self) -> None:
        """Load the model (idempotent). Raises when it cannot: the caller reports it."""

    @abstractmethod
    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]: ...


class DetectorUnavailable(ContentDetector):
    """A configured detector that cannot work (missing setting or package): every use fails
    with the reason, so jobs that ask for checking fail loudly and the others run."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def load(self) -> None:
        raise RuntimeError(self.reason)

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        raise RuntimeError(self.reason)


class ContentChecker:
    """A detector plus the withhold policy. Loads the detector on first use (once; a load
    failure is remembered so later jobs fail fast instead of reloading)."""

    def __init__(self, detector: ContentDetector, *, withhold: bool = True, batch: int = BATCH) -> None:
        self.detector = detector
        self.withhold = withhold
        self.batch = batch
        self._lock = threading.Lock()
        self._loaded = False
        self._error: str | None = None

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            if self._error is None:
                try:
                    self.detector.load()
                    self._loaded = True
                    return
                except Exception as exc:
                    log.exception("content detector %s failed to load", self.detector.name)
                    self._error = f"{type(exc).__name__}: {exc}"
            raise JobFailed("safetyCheckFailed",
                            f"Content checking was requested but the {self.detector.name!r} detector is not "
                            f"available ({self._error}); the task was not checked and nothing was delivered.")

    def detect(self, frames: Sequence[np.ndarray], on_step: OnStep = no_progress, *, done: int = 0,
               total: int | None = None) -> list[bool]:
        """Flags for ``frames``, in batches; ``on_step`` gets ``done + checked`` of ``total``."""
        self._ensure_loaded()
        total = len(frames) if total is None else total
        flags: list[bool] = []
        for i in range(0, len(frames), self.batch):
            chunk = frames[i:i + self.batch]
            try:
                got = [bool(f) for f in self.detector.detect(chunk)]
            except (JobCancelled, JobFailed):
                raise
            except Exception as exc:
                log.exception("content detector %s failed", self.detector.name)
                raise JobFailed("safetyCheckFailed", f"The {self.detector.name!r} content detector failed "
                                f"({type(exc).__name__}: {exc}); nothing was delivered.") from exc
            if len(got) != len(chunk):
                raise JobFailed("safetyCheckFailed", f"The {self.detector.name!r} content detector returned "
                                f"{len(got)} verdicts for {len(chunk)} frames.")
            flags.extend(got)
            on_step(done + len(flags), total, STAGE)
        return flags


@dataclass
class SafetyRun:
    """One job's content check; see the module docstring. ``mode == "none"``: nothing runs."""

    checker: ContentChecker | None
    mode: SafetyMode
    input_flag: bool | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, checker: ContentChecker | None, spec: JobSpec, image: Image.Image | None) -> SafetyRun:
        """Check the input image (when the job asks for checking). Raises JobFailed when no
        detector is configured, or when the image is flagged and flagged content is withheld."""
        mode: SafetyMode = spec.safety_mode if spec.safety_check else "none"
        if mode == "none":
            return cls(None, "none")
        if checker is None:
            raise JobFailed("unsupportedSafetyCheck",
                            "Content checking (safety.checkContent) was requested but this server has no content "
                            "detector configured (WANFLASH_SAFETY_DETECTOR); nothing was generated.")
        flag: bool | None = None
        if image is not None:
            (flag,) = checker.detect([np.asarray(image.convert("RGB"), dtype=np.uint8)])
            if flag and checker.withhold:
                raise JobFailed("nsfwContentDetected",
                                "The input image (inputs.frameImages) was flagged by the content check; "
                                "nothing was generated.")
        return cls(checker, mode, flag)

    def finish(self, videos: Sequence[np.ndarray], *, fps: int, on_step: OnStep = no_progress) -> dict[str, Any] | None:
        """Check the sampled frames of every result; what to report (None when not asked).
        Raises JobFailed ``nsfwContentDetected`` when a result is flagged and flagged content is
        withheld: all results of the task are withheld (a client waits for all of them)."""
        if self.checker is None or self.mode == "none":
            return None
        picks = [sample_frame_indices(len(v), fps, self.mode) for v in videos]
        total = sum(len(p) for p in picks)
        done = 0
        self.results = []
        for video, idx in zip(videos, picks, strict=True):
            flags = self.checker.detect([video[i] for i in idx], on_step, done=done, total=total)
            done += len(idx)
            flagged = [i for i, f in zip(idx, flags, strict=True) if f]
            self.results.append({"NSFWContent": bool(flagged) or bool(self.input_flag),
                                 "framesChecked": len(idx), "flaggedFrames": flagged})
        bad = [i + 1 for i, r in enumerate(self.results) if r["flaggedFrames"]]
        if bad and self.checker.withhold:
            where = "; ".join(f"result {i}: frames {self.results[i - 1]['flaggedFrames'][:8]}" for i in bad)
            raise JobFailed("nsfwContentDetected",
                            f"The content check flagged the generated video ({where}); all outputs of the "
                            f"task were withheld.")
        return {"mode": self.mode, "detector": self.checker.detector.name, "withhold": self.checker.withhold,
                "input": self.input_flag, "results": self.results}


def create_checker(config: SafetyConfig) -> ContentChecker | None:
    """The configured checker (detector not loaded yet), or None when ``safety_detector`` is
    ``none``. A misconfigured detector still gives a checker, whose jobs fail with the reason."""
    name = config.detector
    if name == "none":
        return None
    from wanflash.pipelines import detectors

    detector: ContentDetector
    try:
        detector = detectors.build(config)
    except (ValueError, ImportError) as exc:
        log.error("content detector %r unavailable: %s", name, exc)
        detector = DetectorUnavailable(name, str(exc))
    return ContentChecker(detector, withhold=config.withhold)

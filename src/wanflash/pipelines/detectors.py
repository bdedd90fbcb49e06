"""The offline NSFW detectors behind :class:`wanflash.pipelines.safety.ContentDetector`.

Chosen by ``WANFLASH_SAFETY_DETECTOR`` (see the README's *Content safety* section for the
licence reasoning); every model is loaded from a local directory, never from a hub:

* ``classifier``: any ``transformers`` image-classification checkpoint (e.g.
  ``Falconsai/nsfw_image_detection``, a ViT under Apache-2.0) in ``safety_model_dir``. A frame is
  flagged when the summed probability of the labels in ``safety_labels`` reaches
  ``safety_threshold``. Loading fails when the model has none of those labels, so a wrong
  checkpoint cannot pass everything silently.
* ``clip``: diffusers' ``StableDiffusionSafetyChecker`` (CLIP ViT-L/14 + concept embeddings,
  e.g. ``CompVis/stable-diffusion-safety-checker``) with its ``CLIPImageProcessor`` in
  ``safety_model_dir``; its own per-concept thresholds decide.
* ``nudenet``: the ``nudenet`` package (opt-in extra; AGPL-3.0, see the README), whose wheel
  ships its ONNX model. A frame is flagged when an exposed-anatomy class is detected with a
  score of at least ``safety_threshold``.

Importing this module imports no torch; each detector imports its libraries in ``load``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wanflash.pipelines.safety import ContentDetector

if TYPE_CHECKING:
    from wanflash.config import SafetyConfig

# NudeNet 3.x classes that count as NSFW (covered/face classes do not).
NUDENET_NSFW = frozenset({
    "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
})


def _device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _model_dir(path: Path | None, name: str) -> Path:
    if path is None:
        raise ValueError(f"safety_detector={name!r} needs WANFLASH_SAFETY_MODEL_DIR (a local model directory)")
    return Path(path)


class ClassifierDetector(ContentDetector):
    """A transformers image classifier; see the module docstring."""

    name = "classifier"

    def __init__(self, model_dir: Path, *, labels: Sequence[str], threshold: float = 0.5,
                 device: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.labels = {label.strip().lower() for label in labels if label.strip()}
        self.threshold = threshold
        self.device_setting = device
        self._model: Any = None
        self._processor: Any = None
        self._unsafe: list[int] = []

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"safety model directory {self.model_dir} does not exist")
        model = AutoModelForImageClassification.from_pretrained(self.model_dir, local_files_only=True)
        id2label = {int(k): str(v).lower() for k, v in model.config.id2label.items()}
        unsafe = sorted(i for i, label in id2label.items() if label in self.labels)
        if not unsafe:
            raise ValueError(f"the classifier in {self.model_dir} has labels {sorted(id2label.values())}, none of "
                             f"WANFLASH_SAFETY_LABELS={sorted(self.labels)}: it could never flag anything")
        self._processor = AutoImageProcessor.from_pretrained(self.model_dir, local_files_only=True)
        self._device = _device(self.device_setting)
        self._model = model.to(self._device).eval()
        self._unsafe = unsafe

    def scores(self, frames: Sequence[np.ndarray]) -> list[float]:
        """The unsafe probability of each frame."""
        import torch

        self.load()
        inputs = self._processor(images=[np.asarray(f) for f in frames], return_tensors="pt")
        with torch.inference_mode():
            logits = self._model(pixel_values=inputs["pixel_values"].to(self._device)).logits.float()
        if self._model.config.problem_type == "multi_label_classification":
            probs = torch.sigmoid(logits)
            unsafe = probs[:, self._unsafe].max(dim=1).values
        else:
            unsafe = torch.softmax(logits, dim=-1)[:, self._unsafe].sum(dim=1)
        return [float(x) for x in unsafe.cpu()]

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        return [s >= self.threshold for s in self.scores(frames)]


class ClipSafetyDetector(ContentDetector):
    """diffusers' Stable Diffusion safety checker; see the module docstring."""

    name = "clip"

    def __init__(self, model_dir: Path, *, device: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.device_setting = device
        self._model: Any = None
        self._processor: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from diffusers.utils import logging as diffusers_logging
        from transformers import CLIPImageProcessor

        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"safety model directory {self.model_dir} does not exist")
        # Its "a black image will be returned instead" warning is about SD pipelines, not us.
        diffusers_logging.get_logger("diffusers.pipelines.stable_diffusion.safety_checker").setLevel("ERROR")
        self._processor = CLIPImageProcessor.from_pretrained(self.model_dir, local_files_only=True)
        self._device = _device(self.device_setting)
        model = StableDiffusionSafetyChecker.from_pretrained(self.model_dir, local_files_only=True)
        self._model = model.to(self._device).eval()

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        import torch

        self.load()
        inputs = self._processor(images=[np.asarray(f) for f in frames], return_tensors="pt")
        # The checker blacks out flagged entries of `images` in place: give it placeholders.
        placeholders = np.zeros((len(frames), 1, 1, 3), dtype=np.float32)
        with torch.inference_mode():
            _, flags = self._model(clip_input=inputs["pixel_values"].to(self._device), images=placeholders)
        return [bool(f) for f in flags]


class NudeNetDetector(ContentDetector):
    """NudeNet's bundled ONNX detector (opt-in, AGPL-3.0); see the module docstring."""

    name = "nudenet"

    def __init__(self, *, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._detector: Any = None

    def load(self) -> None:
        if self._detector is None:
            from nudenet import NudeDetector

            self._detector = NudeDetector()

    def detect(self, frames: Sequence[np.ndarray]) -> list[bool]:
        self.load()
        flags = []
        for frame in frames:
            # NudeNet reads images with OpenCV conventions: BGR channel order.
            bgr = np.ascontiguousarray(np.asarray(frame)[:, :, ::-1])
            found = self._detector.detect(bgr)
            flags.append(any(d["class"] in NUDENET_NSFW and d["score"] >= self.threshold for d in found))
        return flags


def build(config: SafetyConfig) -> ContentDetector:
    """The detector ``config.detector`` names, not loaded. ValueError / ImportError
    when it cannot be built (a missing directory setting, a package not installed)."""
    name = config.detector
    if name == "classifier":
        return ClassifierDetector(_model_dir(config.model_dir, name),
                                  labels=config.labels.split(","), threshold=config.threshold,
                                  device=config.device)
    if name == "clip":
        return ClipSafetyDetector(_model_dir(config.model_dir, name), device=config.device)
    if name == "nudenet":
        if importlib.util.find_spec("nudenet") is None:
            raise ImportError("safety_detector='nudenet' needs the nudenet package: pip install 'wanflash[nudenet]' "
                              "(AGPL-3.0: read the README's Content safety section first)")
        return NudeNetDetector(threshold=config.threshold)
    raise ValueError(f"unknown safety_detector {name!r}")

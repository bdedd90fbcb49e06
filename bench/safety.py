"""Content-check cost: seconds per frame of each detector, and per 5 s clip in fast / full mode.

The ``classifier`` and ``clip`` detectors are timed with their real architectures built from
configs (ViT-B/16 at 224 px as in ``Falconsai/nsfw_image_detection``; CLIP ViT-L/14 as in
``CompVis/stable-diffusion-safety-checker``) with random weights: the compute is the same as
with the staged weights, the verdicts are meaningless. ``nudenet`` is timed with the ONNX model
its wheel ships, when the package is importable. Frames are 1280x720 RGB (a 720p output); the
time includes preprocessing, through the same ``ContentChecker`` the service uses.

    python bench/safety.py [--device cpu] [--repeat 3] [--fps 16] [--detectors classifier,clip,nudenet]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from wanflash.pipelines.detectors import ClassifierDetector, ClipSafetyDetector, NudeNetDetector
from wanflash.pipelines.safety import ContentChecker, ContentDetector, sample_frame_indices


def stage_classifier(root: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(num_labels=2, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
    ViTForImageClassification(config).save_pretrained(root)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(root)
    return root


def stage_clip(root: Path) -> Path:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                       "num_attention_heads": 16, "image_size": 224, "patch_size": 14},
                        projection_dim=768)
    StableDiffusionSafetyChecker(config).save_pretrained(root)
    CLIPImageProcessor().save_pretrained(root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16, help="frames per timed batch")
    ap.add_argument("--detectors", default="classifier,clip,nudenet")
    args = ap.parse_args()
    import torch

    print(f"# {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"device {args.device}, {os.cpu_count()} cpus")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(args.frames)]
    clip_frames = args.fps * 5
    fast, full = len(sample_frame_indices(clip_frames, args.fps, "fast")), clip_frames
    print(f"| detector | load s | s / frame | 5 s clip, fast ({fast} frames) | 5 s clip, full ({full} frames) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.detectors.split(","):
            det: ContentDetector
            if name == "classifier":
                det = ClassifierDetector(stage_classifier(Path(tmp) / "cls"), labels=["nsfw"], device=args.device)
            elif name == "clip":
                det = ClipSafetyDetector(stage_clip(Path(tmp) / "clip"), device=args.device)
            elif name == "nudenet":
                if importlib.util.find_spec("nudenet") is None:
                    print("| nudenet | not installed | | | |")
                    continue
                det = NudeNetDetector()
            else:
                raise SystemExit(f"unknown detector {name}")
            checker = ContentChecker(det)
            t0 = time.perf_counter()
            checker.detect(frames[:1])  # loads, and warms up
            load = time.perf_counter() - t0
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                checker.detect(frames)
                times.append((time.perf_counter() - t0) / len(frames))
            per = statistics.median(times)
            print(f"| {name} | {load:.2f} | {per:.3f} | {per * fast:.2f} s | {per * full:.1f} s |")


if __name__ == "__main__":
    main()

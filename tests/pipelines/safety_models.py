"""Tiny offline NSFW detectors for tests, built from configs (random weights) and saved in the
layout a staged real model has. Their decision boundary is set from images the test draws: the
"flag" images land on the unsafe side and the "pass" images on the safe side, so the detector
code (preprocessing, model, thresholds) runs for real on test-generated pictures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _features_split(flag: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, float]:
    """A direction and offset with every ``flag`` feature above and every ``ok`` one below."""
    d = flag.mean(0) - ok.mean(0)
    d /= np.linalg.norm(d)
    lo, hi = float((flag @ d).min()), float((ok @ d).max())
    assert lo > hi, "the test images are not separable in this tiny model's features"
    return d, (lo + hi) / 2


def build_classifier(root: Path, flag: Sequence[np.ndarray], ok: Sequence[np.ndarray], *,
                     labels: tuple[str, str] = ("normal", "nsfw")) -> Path:
    """A tiny ViT image classifier (labels ``labels``) whose ``labels[1]`` wins on ``flag``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37, num_labels=2, id2label={0: labels[0], 1: labels[1]},
                       label2id={labels[0]: 0, labels[1]: 1})
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32})

    def feats(images: Sequence[np.ndarray]) -> np.ndarray:
        px = processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return model.vit(px).last_hidden_state[:, 0].numpy().astype(np.float64)

    d, mid = _features_split(feats(flag), feats(ok))
    scale = 200.0  # logits far apart: probabilities near 0 / 1
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1] = torch.from_numpy(d * scale).float()
        model.classifier.bias[1] = float(-mid * scale)
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


def build_clip_checker(root: Path, flag: Sequence[np.ndarray], ok: Sequence[np.ndarray]) -> Path:
    """A tiny ``StableDiffusionSafetyChecker`` whose concept embeddings flag ``flag`` only."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})

    def embeds(images: Sequence[np.ndarray]) -> np.ndarray:
        px = processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            e = model.visual_projection(model.vision_model(px)[1]).numpy().astype(np.float64)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    # Cosine similarity to one concept embedding is the checker's score: put the concept on
    # the side of the flag images and its threshold between the two groups.
    d, mid = _features_split(embeds(flag), embeds(ok))
    with torch.no_grad():
        model.concept_embeds[:] = torch.from_numpy(d).float()
        model.concept_embeds_weights[:] = float(mid)
        model.special_care_embeds[:] = torch.from_numpy(d).float()
        model.special_care_embeds_weights[:] = 2.0  # above any cosine: never triggers
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


def build_constant_classifier(root: Path, *, unsafe: bool) -> Path:
    """A tiny ViT classifier whose verdict is fixed by its bias (for end-to-end plumbing tests)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37, num_labels=2, id2label={0: "normal", 1: "nsfw"},
                       label2id={"normal": 0, "nsfw": 1})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias[:] = torch.tensor([0.0, 20.0 if unsafe else -20.0])
    model.save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return root

"""Pixel work around the model: fit images and videos to a size, and match colours at seams.

Images use PIL, videos torch (already loaded by the engine). ``fit_*`` keep the aspect ratio: scale so the target is
fully covered, then crop the centre, so the result is exactly the size asked for and never
stretched or letterboxed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESAMPLE = "bicubic"


def cover_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    """The centred crop of the source (left, top, right, bottom) with the target's aspect ratio."""
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"sizes must be positive, got {src_w}x{src_h} -> {dst_w}x{dst_h}")
    scale = max(dst_w / src_w, dst_h / src_h)
    cw, ch = dst_w / scale, dst_h / scale
    left, top = (src_w - cw) / 2.0, (src_h - ch) / 2.0
    return left, top, left + cw, top + ch


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` as RGB, cover-resized and centre-cropped to exactly ``width`` x ``height``."""
    image = image.convert("RGB")
    box = cover_box(image.width, image.height, width, height)
    return image.resize((width, height), Image.Resampling.BICUBIC, box=box)


def fit_video(frames: np.ndarray, width: int, height: int, *, chunk: int = 16) -> np.ndarray:
    """(F, h, w, 3) uint8 frames cover-resized and centre-cropped to (F, height, width, 3).

    Resampling is bicubic with antialiasing (torch's uint8 kernel on channels-last tensors: about
    the cost of bilinear and several times faster than PIL per frame at 1080p; ``bench/resize.py``
    measures it against encoding). Bicubic keeps the 720p-class -> 1080p upscale sharper than
    bilinear; the antialias filter widens the kernel when shrinking, so fine texture does not alias.
    A few frames at a time, so memory stays near the output's own size.
    """
    import torch

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    f, h, w, _ = frames.shape
    if (w, h) == (width, height):
        return frames
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    scale = max(width / w, height / h)
    sw, sh = max(width, int(round(w * scale))), max(height, int(round(h * scale)))
    left, top = (sw - width) // 2, (sh - height) // 2
    out = np.empty((f, height, width, 3), dtype=np.uint8)
    src = torch.from_numpy(np.ascontiguousarray(frames))
    for i in range(0, f, chunk):
        x = src[i:i + chunk].permute(0, 3, 1, 2)  # a channels-last view: no copy
        y = torch.nn.functional.interpolate(x, size=(sh, sw), mode=RESAMPLE, antialias=True, align_corners=False)
        out[i:i + chunk] = y.permute(0, 2, 3, 1)[:, top:top + height, left:left + width].numpy()
    return out


def match_colors(segment: np.ndarray, reference: np.ndarray, *, eps: float = 1e-3,
                 strength: float = 1.0) -> np.ndarray:
    """Shift a new segment's colours toward the frame it continues from.

    ``segment`` is (F, H, W, 3) float in [0, 1] whose first frame should equal ``reference``
    (H, W, 3). Chained image-to-video drifts in colour; the per-channel mean and standard
    deviation transfer that maps the segment's first frame onto ``reference`` is applied to
    the whole segment, so the seam is invisible and the drift does not compound. The gain is
    clamped so a flat frame cannot blow up the segment. ``strength`` < 1 applies only that
    fraction of the transfer (a hard cut to another view should move toward the grade of the
    reference without being forced onto its exact colour statistics).
    """
    first = segment[0].reshape(-1, 3).astype(np.float64)
    ref = reference.reshape(-1, 3).astype(np.float64)
    mu_s, sd_s = first.mean(axis=0), first.std(axis=0)
    mu_r, sd_r = ref.mean(axis=0), ref.std(axis=0)
    gain = np.clip(sd_r / np.maximum(sd_s, eps), 0.5, 2.0)
    gain = 1.0 + strength * (gain - 1.0)
    out = (segment - mu_s) * gain + mu_s + strength * (mu_r - mu_s)
    return np.clip(out, 0.0, 1.0).astype(segment.dtype, copy=False)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8 (rounded, clipped)."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)

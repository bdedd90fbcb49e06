"""Resizing to the exact request, colour matching at seams, and profile -> weights resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wanflash.config import Settings
from wanflash.pipelines.postprocess import cover_box, fit_image, fit_video, match_colors
from wanflash.pipelines.registry import WeightsNotFound, create_pipeline


@pytest.mark.parametrize("src, dst", [((80, 48), (1280, 720)), ((48, 64), (1248, 1632)), ((64, 48), (1440, 1440)),
                                      ((80, 48), (720, 1280))])
def test_fit_video_exact_and_centred(src, dst) -> None:
    w, h = src
    frames = np.zeros((3, h, w, 3), np.uint8)
    frames[:, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = 255  # a white dot in the centre
    out = fit_video(frames, *dst)
    assert out.shape == (3, dst[1], dst[0], 3) and out.dtype == np.uint8
    ys, xs = np.nonzero(out[0, :, :, 0] > 128)
    # The centre stays the centre (no stretch, no off-centre crop).
    assert abs(ys.mean() - dst[1] / 2) < dst[1] * 0.05
    assert abs(xs.mean() - dst[0] / 2) < dst[0] * 0.05


def test_fit_video_upscale_is_sharper_than_bilinear() -> None:
    """720p-class -> 1080p: bicubic restores a band-limited picture closer than bilinear does."""
    torch = pytest.importorskip("torch")
    yy, xx = np.mgrid[0:108, 0:192].astype(np.float32)
    truth = 128 + 50 * np.sin(xx / 3.1) * np.cos(yy / 4.3) + 40 * np.sin((xx + yy) / 5.7)
    big = np.repeat(np.clip(truth, 0, 255).astype(np.uint8)[None, :, :, None], 3, axis=3)
    small = np.stack([np.asarray(Image.fromarray(big[0]).resize((128, 72), Image.Resampling.LANCZOS))])
    ours = fit_video(small, 192, 108).astype(np.float32)
    x = torch.from_numpy(small).permute(0, 3, 1, 2).float()
    bilinear = torch.nn.functional.interpolate(x, size=(108, 192), mode="bilinear", align_corners=False)
    bilinear = bilinear.permute(0, 2, 3, 1).numpy()
    inner = (slice(None), slice(4, -4), slice(4, -4))  # borders are the same for both
    err_ours = np.abs(ours - big)[inner].mean()
    err_bilinear = np.abs(bilinear - big)[inner].mean()
    assert err_ours < 0.85 * err_bilinear


def test_fit_video_shrink_does_not_alias() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1, 144, 256, 3), dtype=np.uint8)  # std ~74
    out = fit_video(noise, 64, 36)
    assert out.std() < 30  # antialiased: ~4x4 pixels averaged; point-sampled bilinear keeps ~52


def test_fit_image_cover_crop() -> None:
    img = Image.new("RGB", (400, 100), (255, 0, 0))
    out = fit_image(img, 64, 48)
    assert out.size == (64, 48)
    assert cover_box(400, 100, 64, 48) == pytest.approx((133.333, 0, 266.667, 100), abs=1e-3)


def test_match_colors_maps_first_frame_to_reference() -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.6, (16, 16, 3)).astype(np.float32)
    drifted = np.stack([np.clip(ref * 0.8 + 0.15, 0, 1)] * 4)  # a colour cast on the whole clip
    fixed = match_colors(drifted, ref)
    assert np.abs(fixed[0] - ref).mean() < 0.01
    assert np.abs(drifted[0] - ref).mean() > 0.05
    assert fixed.shape == drifted.shape


@pytest.mark.parametrize("profile", ["wan2.2-ti2v-5b", "wan2.2-i2v-a14b"])
def test_real_profile_without_weights(tmp_path: Path, profile: str) -> None:
    with pytest.raises(WeightsNotFound, match="WANFLASH_WEIGHTS_DIR"):
        create_pipeline(Settings(data_dir=tmp_path, profile=profile))
    with pytest.raises(WeightsNotFound, match="model_index.json"):
        create_pipeline(Settings(data_dir=tmp_path, profile=profile, weights_dir=tmp_path))


def test_real_profile_without_audio_weights(tmp_path: Path) -> None:
    video = tmp_path / "wan"
    video.mkdir()
    (video / "model_index.json").write_text("{}")  # enough for the video check; nothing is loaded
    settings = Settings(data_dir=tmp_path, profile="wan2.2-ti2v-5b", weights_dir=video)
    with pytest.raises(WeightsNotFound, match="WANFLASH_AUDIO_WEIGHTS_DIR is not set"):
        create_pipeline(settings)
    with pytest.raises(WeightsNotFound, match="model_index.json missing"):
        create_pipeline(settings.replace(audio_weights_dir=tmp_path))
    from wanflash.pipelines.wan import WanVideoPipeline

    assert isinstance(create_pipeline(settings.replace(audio_model="none")), WanVideoPipeline)

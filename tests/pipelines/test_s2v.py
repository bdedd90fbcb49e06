"""The S2V stage's planning and the configuration that selects it (no model runs here; the
rendering itself is tested through the worker in tests/worker/test_s2v_render.py, the numerics
against the official code in test_s2v_parity.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wanflash.config import Settings
from wanflash.media.track import AudioTrack
from wanflash.pipelines.registry import WeightsNotFound, a2v_mode, a2v_weights_root
from wanflash.pipelines.s2v import FIRST_CLIP_DROP, AudioFeatures, clip_plan, generation_size, to_mono_16k


@pytest.mark.parametrize("size, area, want", [
    ((1280, 720), 1280 * 720, (1280, 704)),
    ((720, 1280), 1280 * 720, (704, 1280)),
    ((1280, 720), 64 * 64, (64, 64)),
    ((960, 960), 1280 * 720, (960, 960)),
])
def test_generation_size_is_on_the_64_grid_within_the_area(size, area, want):
    got = generation_size(*size, max_area=area)
    assert got == want and got[0] % 64 == 0 and got[1] % 64 == 0 and got[0] * got[1] <= max(area, 64 * 64)


def test_clip_plan_counts_the_first_clips_dropped_frames():
    assert clip_plan(77, 80) == 1  # 80 - 3
    assert clip_plan(78, 80) == 2
    assert clip_plan(81 * 15 // 1, 80) == 1 + -(-(81 * 15 - 77) // 80)
    assert FIRST_CLIP_DROP == 3


def test_buckets_pick_the_nearest_feature_per_frame_and_zero_past_the_end():
    feats = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)  # 10 features = 1/3 s at 30/s
    out = AudioFeatures.buckets(feats, fps=16, num_frames=8)
    assert out.shape == (2, 3, 8)
    idx = np.round(np.arange(8) / 16 * 30).astype(int)  # 0 2 4 6 8 9 11 13
    for k, i in enumerate(idx):
        want = feats[:, i] if i < 10 else torch.zeros(2, 3)
        assert torch.equal(out[..., k], want)


def test_tracks_are_read_as_16k_mono():
    t = np.linspace(0, 1, 48000, endpoint=False)
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    mono = to_mono_16k(AudioTrack(samples=stereo, rate=48000))
    assert mono.shape == (16000,) and abs(float(np.abs(mono).max()) - 1.0) < 0.01


def test_which_configuration_renders_tracks(tmp_path: Path):
    assert a2v_mode(Settings(profile="tiny")) == "s2v"  # the toy S2V, so make run shows it
    assert a2v_mode(Settings(profile="wan2.2-i2v-a14b")) == "mux"  # no weights: today's muxing stays
    assert a2v_mode(Settings(profile="wan2.2-i2v-a14b", a2v_weights_dir=tmp_path)) == "s2v"
    assert a2v_mode(Settings(profile="tiny", a2v_model="none")) == "mux"
    assert a2v_weights_root(Settings(profile="wan2.2-i2v-a14b")) is None
    with pytest.raises(WeightsNotFound, match="WANFLASH_A2V_WEIGHTS_DIR"):
        a2v_weights_root(Settings(profile="wan2.2-ti2v-5b", a2v_model="s2v"))
    with pytest.raises(WeightsNotFound, match="transformer"):
        a2v_weights_root(Settings(profile="wan2.2-ti2v-5b", a2v_weights_dir=tmp_path))
    for part in ("transformer", "audio_encoder", "vae", "text_encoder", "tokenizer"):
        (tmp_path / part).mkdir()
    assert a2v_weights_root(Settings(profile="wan2.2-ti2v-5b", a2v_weights_dir=tmp_path)) == tmp_path


def test_bfloat16_load_runs_and_stays_near_float32(tmp_path: Path):
    """The GPU path: from_pretrained in bfloat16 keeps the timestep MLPs, modulation and audio encoder in
    float32 and every mixed-dtype seam casts; the result stays near the float32 model's."""
    from wanflash.pipelines.s2v_model import WanS2VTransformer3DModel

    torch.manual_seed(0)
    model = WanS2VTransformer3DModel(cond_dim=16, audio_dim=32, enable_adain=True, audio_inject_layers=[0, 1],
                                     zero_timestep=True, framepack_drop_mode="padd", dim=48, ffn_dim=64,
                                     freq_dim=32, text_dim=24, num_heads=4, num_layers=2, text_len=16,
                                     num_wav2vec_layers=3).eval()
    model.save_pretrained(tmp_path)
    half = WanS2VTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    assert half.blocks[0].modulation.dtype == torch.float32 and half.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert half.casual_audio_encoder.weights.dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(1, 16, 2, 8, 8, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 24, generator=g),
            torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 16, 2, 8, 8, generator=g),
            torch.zeros(1, 16, 2, 8, 8), torch.randn(1, 3, 32, 8, generator=g))
    with torch.no_grad():
        want = model(*args, motion_frames=(5, 2))
        got = half(*args, motion_frames=(5, 2))
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max().item() < 0.05 * want.abs().max().item()

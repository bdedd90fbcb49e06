"""Our Wan2.2-S2V port against the official code, at toy width with identical random weights.

A port that is wrong in one normalisation, one rotary position or one modulation row gives noise
on the real checkpoint and nothing else here would notice, so the denoiser's forward is compared
on the paths a request takes (first clip without motion memory, a chained clip with it; with and
without the AdaLN / zero-timestep options), and so is the audio feature path (wav2vec2 hidden
states -> 30 fps -> per-frame buckets). Float32 on CPU; the differences printed are the measured
max abs errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipelines.s2v_reference import load, randomize

TOL = 1e-4  # float32; measured ~1e-6 (rotary phases are float64 on both sides)


def _config(**over):
    cfg = dict(cond_dim=16, audio_dim=32, num_audio_token=4, enable_adain=True, adain_mode="attn_norm",
               audio_inject_layers=[0, 2], zero_init=False, zero_timestep=True, enable_motioner=False,
               add_last_motion=True, enable_framepack=True, framepack_drop_mode="padd", in_dim=16, dim=48,
               ffn_dim=64, freq_dim=32, text_dim=24, out_dim=16, num_heads=4, num_layers=3, text_len=16)
    cfg.update(over)
    return cfg


def _pair(monkeypatch, **over):
    from wanflash.pipelines.s2v_model import WanS2VTransformer3DModel

    ref_mod = load(monkeypatch, "modules.s2v.model_s2v")
    cfg = _config(**over)
    ref = ref_mod.WanModel_S2V(**cfg).eval()
    randomize(ref, seed=1)
    ours = WanS2VTransformer3DModel(**cfg).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    return ref, ours


def _inputs(seed: int, frames: int = 8, lat_motion: int = 19, h: int = 8, w: int = 8, layers: int = 25,
            audio_dim: int = 32, text_dim: int = 24):
    g = torch.Generator().manual_seed(seed)
    lat_f = frames // 4
    return dict(
        x=torch.randn(16, lat_f, h, w, generator=g),
        ref=torch.randn(16, 1, h, w, generator=g),
        motion=torch.randn(16, lat_motion, h, w, generator=g),
        cond=torch.randn(16, lat_f, h, w, generator=g),
        audio=torch.randn(1, layers, audio_dim, frames, generator=g),
        context=torch.randn(7, text_dim, generator=g),
    )


def _run_both(ref, ours, inp, t: float, drop: bool, motion_frames=(73, 19)):
    timestep = torch.tensor([t])
    with torch.no_grad():
        want = ref([inp["x"]], t=timestep, context=[inp["context"]], seq_len=None, ref_latents=[inp["ref"]],
                   motion_latents=[inp["motion"]], cond_states=[inp["cond"]], audio_input=inp["audio"],
                   motion_frames=list(motion_frames), drop_motion_frames=drop)[0]
        got = ours(inp["x"][None], torch.tensor([t]), inp["context"][None], inp["ref"][None],
                   inp["motion"][None], inp["cond"][None], inp["audio"], motion_frames=motion_frames,
                   drop_motion_frames=drop)[0]
    return want, got


@pytest.mark.parametrize("drop", [True, False], ids=["first-clip", "chained-clip"])
# zero_timestep=False is not compared: upstream's block cannot run it (it calls .item() on an int).
@pytest.mark.parametrize("over", [{}, {"enable_adain": False, "framepack_drop_mode": "drop"}],
                         ids=["released-config", "plain-norm"])
def test_transformer_matches_reference(monkeypatch, drop, over):
    ref, ours = _pair(monkeypatch, **over)
    inp = _inputs(seed=2)
    want, got = _run_both(ref, ours, inp, t=637.0, drop=drop)
    assert got.shape == want.shape == inp["x"].shape
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    print(f"S2V transformer parity ({'first' if drop else 'chained'} clip, {over or 'released config'}): "
          f"max abs diff {diff:.2e} (output max {scale:.2f})")
    assert scale > 0.1  # a real signal, not zeros compared with zeros
    assert diff < TOL


def test_audio_changes_the_prediction(monkeypatch):
    # Guards the comparison itself: the audio path must reach the output, in both implementations.
    ref, ours = _pair(monkeypatch)
    inp = _inputs(seed=3)
    quiet = dict(inp, audio=inp["audio"] * 0)
    _, loud_out = _run_both(ref, ours, inp, t=500.0, drop=True)
    want_quiet, quiet_out = _run_both(ref, ours, quiet, t=500.0, drop=True)
    assert (loud_out - quiet_out).abs().max().item() > 1e-2
    assert (quiet_out - want_quiet).abs().max().item() < TOL


def test_audio_features_match_reference(monkeypatch):
    """wav2vec2 hidden states of a waveform, resampled to 30 fps and bucketed per 16 fps frame."""
    import sys
    import types

    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    from wanflash.pipelines.s2v import AudioFeatures

    wave = np.random.default_rng(4).standard_normal(16000 * 2 + 1234).astype(np.float32) * 0.3
    # The reference reads files with librosa (not a dependency); hand it the same samples.
    monkeypatch.setitem(sys.modules, "librosa", types.SimpleNamespace(load=lambda path, sr: (wave, sr)))
    ref_mod = load(monkeypatch, "modules.s2v.audio_encoder")
    torch.manual_seed(5)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(8, 8, 8, 8, 8, 8, 8), do_stable_layer_norm=True, feat_extract_norm="layer",
                         vocab_size=12, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model = Wav2Vec2ForCTC(cfg).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                         return_attention_mask=True)
    ref = ref_mod.AudioEncoder.__new__(ref_mod.AudioEncoder)
    ref.processor, ref.model, ref.video_rate = extractor, model, 30
    with torch.no_grad():
        z = ref.extract_audio_feat("track.wav", return_all_layers=True)
        want, want_clips = ref.get_audio_embed_bucket_fps(z, fps=16, batch_frames=12, m=0)
    want = want.permute(1, 2, 0)  # (layers, dim, frames), as WanS2V.encode_audio hands it over

    ours = AudioFeatures(extractor, model.wav2vec2)
    got = ours(wave, fps=16)
    clips = AudioFeatures.clip_count(got, fps=16, frames_per_clip=12)
    got_bucketed = AudioFeatures.buckets(got, fps=16, num_frames=clips * 12)
    diff = (got_bucketed - want).abs().max().item()
    print(f"S2V audio features parity: max abs diff {diff:.2e} over {tuple(want.shape)}")
    assert clips == want_clips
    assert got_bucketed.shape == want.shape
    assert diff < TOL


def test_an_official_checkpoint_loads_unchanged(monkeypatch, tmp_path):
    """What ``WanModel_S2V.save_pretrained`` writes (the released checkpoint's format: its config.json
    leaves out patch_size, text_dim, qk_norm, cross_attn_norm and window_size, which take the defaults)
    is read by our ``from_pretrained`` as it is, and computes the same thing."""
    from wanflash.pipelines.s2v_model import WanS2VTransformer3DModel

    ref_mod = load(monkeypatch, "modules.s2v.model_s2v")
    cfg = _config(text_dim=4096)
    ref = ref_mod.WanModel_S2V(**cfg).eval()
    randomize(ref, seed=6)
    ref.save_pretrained(tmp_path)
    ours = WanS2VTransformer3DModel.from_pretrained(tmp_path).eval()
    inp = _inputs(seed=7, text_dim=4096)
    want, got = _run_both(ref, ours, inp, t=250.0, drop=False)
    diff = (got - want).abs().max().item()
    print(f"S2V official checkpoint through from_pretrained: max abs diff {diff:.2e}")
    assert diff < TOL

"""The embedded toy-width Wan2.2-S2V (random weights, output is noise) for the ``tiny`` profile.

Built offline from configs in code, seeded, and saved in the layout :class:`~wanflash.pipelines.s2v.S2VStage`
loads real weights from (``transformer/``, ``audio_encoder/``, ``vae/``, ``text_encoder/``,
``tokenizer/``), so CI and ``make run`` go through the same ``from_pretrained`` path. The audio
path is live (no zero-initialised injector), so two tracks give two different pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanflash.pipelines.tiny import SEED, _tokenizer, build_once

TINY_S2V_VERSION = 1


def build_tiny_s2v() -> dict[str, Any]:
    """Fresh toy components: S2V denoiser (3 blocks, width 48), wav2vec2 (2 layers, width 32), the
    tiny Wan VAE and umT5 of :mod:`wanflash.pipelines.tiny`, and its word-level tokenizer."""
    import torch
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from wanflash.pipelines.s2v_model import WanS2VTransformer3DModel

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    wav2vec = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(8, 8, 8, 8, 8, 8, 8), do_stable_layer_norm=True, feat_extract_norm="layer",
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                         return_attention_mask=True)
    transformer = WanS2VTransformer3DModel(
        cond_dim=16, audio_dim=32, num_audio_token=4, enable_adain=True, audio_inject_layers=[0, 2],
        zero_timestep=True, enable_framepack=True, framepack_drop_mode="padd", dim=48, ffn_dim=64, freq_dim=32,
        text_dim=32, num_heads=4, num_layers=3, text_len=16, num_wav2vec_layers=3)
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "audio_encoder": wav2vec, "extractor": extractor}


def tiny_s2v_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / "tiny-s2v"


def ensure_tiny_s2v_model(data_dir: Path, *, progress: bool | None = None) -> Path:
    """The toy S2V's directory under ``data_dir/models``, built first if missing or stale."""
    built: dict[str, Any] = {}

    def save(tmp: Path) -> None:
        for name in ("transformer", "vae", "text_encoder", "tokenizer", "audio_encoder"):
            built[name].save_pretrained(tmp / name)
        built["extractor"].save_pretrained(tmp / "audio_encoder")

    return build_once(data_dir, "tiny-s2v", TINY_S2V_VERSION, [lambda tmp: built.update(build_tiny_s2v()), save],
                      desc="building the tiny S2V model", progress=progress)

"""The embedded tiny audio models: one random-weight twin per audio backend, built offline.

Their sound is noise. They exist so each native-audio path runs on any CPU in about a second,
through exactly the same ``from_pretrained`` and pipeline call as the real weights, every part the
class the real checkpoint uses, shrunk, with the tiny Wan model's local WordLevel tokenizer (no hub):

* ``tiny-ltx2`` (``ltx2``): diffusers ``LTX2ConditionPipeline``: the Gemma-3 text encoder (2 layers,
  hidden size 32), the joint audio/video transformer (2 layers), the video VAE (4x spatial and
  temporal compression, where the real one has 32x and 8x), the audio VAE (16 kHz mel, hop 160) and
  a vocoder whose upsampling equals the hop (16 kHz out; real LTX-2 vocodes at 24 kHz);
* ``tiny-ace-step`` (``ace-step``): diffusers ``AceStepPipeline``: a Qwen3 text encoder (1 layer,
  hidden size 16), the condition encoder (lyric and timbre encoders, 1 layer each), the turbo DiT
  (2 layers, ``is_turbo``) and an Oobleck VAE (16 kHz stereo, hop 640: 25 latent frames per second
  like the real 48 kHz / 1920).

:func:`ensure_tiny_audio_model` builds one once, seeded, under ``data_dir/models/<name>``
(atomically, like :func:`wanflash.pipelines.tiny.ensure_tiny_model`).
"""

from __future__ import annotations

from pathlib import Path

from wanflash.pipelines.tiny import SEED, _tokenizer, build_once

# Bump when a recipe changes: an existing tiny audio model with another version is rebuilt.
TINY_AUDIO_VERSION = 1
TINY_ACE_STEP_VERSION = 1
SAMPLE_RATE = 16000
HOP = 160


def build_tiny_audio_pipeline():
    """A fresh tiny ``LTX2ConditionPipeline`` with random weights."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ConditionPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    vocab = len(tokenizer)
    # Gemma-3 is multimodal; the three image-marker ids sit at the end of the (tiny) vocabulary.
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=dict(vocab_size=vocab + 3, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                         sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        mm_tokens_per_image=4, image_token_index=vocab, boi_token_index=vocab + 1, eoi_token_index=vocab + 2,
    )).eval()
    text = text_encoder.config.text_config
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, vae_scale_factors=(4, 4, 4), audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
        qk_norm="rms_norm_across_heads", caption_channels=text.hidden_size, rope_double_precision=False,
        rope_type="split", audio_sampling_rate=SAMPLE_RATE, audio_hop_length=HOP,
    ).eval()
    connectors = LTX2TextConnectors(
        caption_channels=text.hidden_size, text_proj_in_factor=text.num_hidden_layers + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split",
    ).eval()
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        layers_per_block=(1, 1), decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False, False, False),
        downsample_type=("spatiotemporal", "spatiotemporal"), upsample_residual=(False, False),
        upsample_factor=(1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    ).eval()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=SAMPLE_RATE, mel_hop_length=HOP, is_causal=True, mel_bins=8,
    ).eval()
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32,
        out_channels=2, upsample_kernel_sizes=[20, 32], upsample_factors=[10, 16], resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=SAMPLE_RATE,
    ).eval()
    return LTX2ConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae, text_encoder=text_encoder,
        tokenizer=tokenizer, connectors=connectors, transformer=transformer, vocoder=vocoder,
    )


def build_tiny_ace_step_pipeline():
    """A fresh tiny ``AceStepPipeline`` (turbo) with random weights."""
    import torch
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=512, pad_token_id=0,
    )).eval()
    widths = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                  sliding_window=16)
    condition_encoder = AceStepConditionEncoder(
        text_hidden_dim=16, timbre_hidden_dim=8, num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1, **widths).eval()
    # in_channels = 3 x the acoustic latent width (noisy latents, source latents, chunk mask), as in the real DiT.
    transformer = AceStepTransformer1DModel(num_hidden_layers=2, in_channels=24, audio_acoustic_hidden_dim=8,
                                            patch_size=2, is_turbo=True, model_version="turbo", **widths).eval()
    vae = AutoencoderOobleck(encoder_hidden_size=4, downsampling_ratios=[2, 4, 8, 10], channel_multiples=[1, 1, 1, 1],
                             decoder_channels=4, decoder_input_channels=8, audio_channels=2,
                             sampling_rate=SAMPLE_RATE).eval()
    return AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                           condition_encoder=condition_encoder,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))


TINY_MODELS = {
    "ltx2": ("tiny-ltx2", TINY_AUDIO_VERSION, build_tiny_audio_pipeline),
    "ace-step": ("tiny-ace-step", TINY_ACE_STEP_VERSION, build_tiny_ace_step_pipeline),
}


def ensure_tiny_audio_model(data_dir: Path, backend: str = "ltx2", *, progress: bool | None = None) -> Path:
    """The tiny twin of audio ``backend`` under ``data_dir/models``, built first if missing or stale."""
    name, version, build = TINY_MODELS[backend]
    return build_once(data_dir, name, version, [lambda tmp: build().save_pretrained(tmp)],
                      desc="building the tiny audio model", progress=progress)

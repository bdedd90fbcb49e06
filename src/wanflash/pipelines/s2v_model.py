"""Wan2.2-S2V's denoiser as a diffusers ``ModelMixin``: a Wan DiT that hears audio.

A port of the official ``WanModel_S2V`` (Wan-Video/Wan2.2, Apache-2.0, ``wan/modules/s2v``) for
what an image + audio request needs: the noisy clip's tokens, the reference image's tokens (held at
timestep 0 and temporal position 30), the previous clip's latents packed FramePack-style (1 / 2 / 16
frames at 1x / 2x / 4x compression) for chaining, a zero pose condition, the prompt through
cross-attention, and wav2vec2 features through a causal 1-D conv encoder whose per-frame tokens are
cross-attended by the video tokens of that latent frame after the configured blocks (with an AdaLN
driven by a global audio vector). Parameter names and ``config.json`` keys are the official ones, so
the released checkpoint (``diffusion_pytorch_model-*.safetensors`` + ``config.json``) loads with
``from_pretrained`` unchanged, and ``tests/pipelines/test_s2v_parity.py`` checks the forward
against the official code with identical weights.

Not ported: the ``enable_motioner`` transformer motioner and the plain motion path (the released
14B uses FramePack), ``adain_mode`` other than ``attn_norm``, and sequence parallelism. Attention is
``torch.nn.functional.scaled_dot_product_attention`` (full, unmasked: every sequence of a batch has
the same length here). Rotary phases are computed in float64 as upstream does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNorm
from torch import nn

# The reference image's temporal rotary position: far past the clip's latent frames (as trained).
REF_FRAME_POSITION = 30


# -- rotary embedding


def rope_table(max_len: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """``(max_len, dim // 2)`` complex128 phases ``exp(i * pos / theta^(2k/dim))``."""
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64),
                         1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return torch.polar(torch.ones_like(angles), angles)


def _positions(start: int, span: int, count: int) -> list[int]:
    """``count`` integer positions spread over ``span`` starting at ``start`` (numpy's truncating
    ``linspace`` on purpose: the checkpoint was trained with exactly these)."""
    if start >= 0:
        return np.linspace(start, start + span - 1, count).astype(int).tolist()
    # Negative (past) frames: positions counted back from 0, phases conjugated by the caller.
    return np.linspace(-start, -start - span + 1, count).astype(int).tolist()


def grid_freqs(tables: Sequence[torch.Tensor], start: Sequence[int], end: Sequence[int],
               span: Sequence[int]) -> torch.Tensor:
    """Rotary phases ``(f*h*w, d/2)`` of a token grid covering ``start..end`` per axis (frames,
    rows, columns), whose positions are spread over ``span`` (a compressed grid covers more)."""
    (f0, h0, w0), (f1, h1, w1), (tf, th, tw) = start, end, span
    nf, nh, nw = f1 - f0, h1 - h0, w1 - w0
    f_idx = _positions(f0, tf, nf)
    ft = tables[0][f_idx]
    if f0 < 0:
        ft = ft.conj()
    parts = [
        ft.view(nf, 1, 1, -1).expand(nf, nh, nw, -1),
        tables[1][_positions(h0, th, nh)].view(1, nh, 1, -1).expand(nf, nh, nw, -1),
        tables[2][_positions(w0, tw, nw)].view(1, 1, nw, -1).expand(nf, nh, nw, -1),
    ]
    return torch.cat(parts, dim=-1).reshape(nf * nh * nw, -1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``x`` (B, S, heads, d) rotated by ``freqs`` (S, d/2) complex; float64 inside, float32 out."""
    b, s, n, d = x.shape
    z = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, d // 2, 2))
    return torch.view_as_real(z * freqs.view(1, s, 1, -1)).flatten(3).float()


# -- layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, S, heads, d) attention, returned as (B, S, heads * d)."""
    dtype = v.dtype
    q, k = q.to(dtype), k.to(dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Wan attention (q/k RMS-normed across heads). Self-attention with rotary ``freqs``, or
    cross-attention to ``context``."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                freqs: torch.Tensor | None = None) -> torch.Tensor:
        src = x if context is None else context
        b, n = x.shape[0], self.num_heads
        q = self.norm_q(self.q(x)).view(b, x.shape[1], n, -1)
        k = self.norm_k(self.k(src)).view(b, src.shape[1], n, -1)
        v = self.v(src).view(b, src.shape[1], n, -1)
        if freqs is not None:
            q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        return self.o(_sdpa(q, k, v).type_as(x))


class Block(nn.Module):
    """One DiT block with two modulation sets: tokens before ``split`` (the noisy clip) take the
    timestep's, the rest (reference image, motion memory) the zero-timestep's."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, cross_attn_norm: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = Attention(dim, num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    @staticmethod
    def _per_segment(x: torch.Tensor, mod: torch.Tensor, split: int) -> torch.Tensor:
        """``mod`` (B, 2, C): row 0 for tokens [0, split), row 1 for the rest, broadcast to x."""
        sel = torch.ones(x.shape[1], dtype=torch.long, device=x.device)
        sel[:split] = 0
        return mod[:, sel]

    def forward(self, x: torch.Tensor, e: torch.Tensor, split: int, freqs: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        # e: (B, 6, 2, C) float32
        mods = (self.modulation.float().unsqueeze(2) + e).unbind(1)
        shift1, scale1, gate1, shift2, scale2, gate2 = (self._per_segment(x, m, split) for m in mods)
        h = (self.norm1(x).float() * (1 + scale1) + shift1).type_as(x)
        x = (x.float() + self.self_attn(h, freqs=freqs).float() * gate1).type_as(x)
        x = x + self.cross_attn(self.norm3(x), context=context)
        h = (self.norm2(x).float() * (1 + scale2) + shift2).type_as(x)
        return (x.float() + self.ffn(h).float() * gate2).type_as(x)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: Sequence[int], eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        h = self.norm(x).float() * (1 + scale) + shift
        return self.head(h.to(self.head.weight.dtype))


class CausalConv1d(nn.Module):
    def __init__(self, chan_in: int, chan_out: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.pad = kernel_size - 1
        self.conv = nn.Conv1d(chan_in, chan_out, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0), mode="replicate"))


class AudioFrameEncoder(nn.Module):
    """wav2vec2 features per video frame -> ``num_token`` audio tokens (+ 1 learnt padding token)
    per latent frame (two stride-2 causal convs: 4 video frames per latent frame), and optionally
    one global vector per latent frame for the AdaLN. Shares ``conv2``/``conv3`` between both
    paths, as trained."""

    def __init__(self, in_dim: int, hidden_dim: int, num_token: int, need_global: bool) -> None:
        super().__init__()
        self.num_heads = num_token
        self.need_global = need_global
        self.conv1_local = CausalConv1d(in_dim, hidden_dim // 4 * num_token)
        if need_global:
            self.conv1_global = CausalConv1d(in_dim, hidden_dim // 4)
            self.final_linear = nn.Linear(hidden_dim, hidden_dim)
        self.conv2 = CausalConv1d(hidden_dim // 4, hidden_dim // 2, stride=2)
        self.conv3 = CausalConv1d(hidden_dim // 2, hidden_dim, stride=2)
        self.norm1 = nn.LayerNorm(hidden_dim // 4, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden_dim // 2, elementwise_affine=False, eps=1e-6)
        self.norm3 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, hidden_dim))

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C/4, T) after conv1 -> (N, T/4, C)."""
        x = F.silu(self.norm1(x.transpose(1, 2))).transpose(1, 2)
        x = F.silu(self.norm2(self.conv2(x).transpose(1, 2))).transpose(1, 2)
        return F.silu(self.norm3(self.conv3(x).transpose(1, 2)))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``feats`` (B, T, in_dim) -> (global (B, T', 1, C) or None, local (B, T', num_token+1, C))."""
        b = feats.shape[0]
        x = feats.transpose(1, 2)  # B C T
        local = self.conv1_local(x)  # B (n c) T
        local = local.unflatten(1, (self.num_heads, -1)).flatten(0, 1)  # (B n) c T
        local = self._tail(local)  # (B n) T' C
        local = local.unflatten(0, (b, self.num_heads)).transpose(1, 2)  # B T' n C
        pad = self.padding_tokens.expand(b, local.shape[1], 1, -1)
        local = torch.cat([local, pad], dim=2)
        if not self.need_global:
            return None, local
        glob = self.final_linear(self._tail(self.conv1_global(x)))  # B T' C
        return glob.unsqueeze(2), local


class CausalAudioEncoder(nn.Module):
    """Learnt softmax-free weighting of the wav2vec2 layers, then :class:`AudioFrameEncoder`."""

    def __init__(self, dim: int, out_dim: int, num_token: int, need_global: bool, num_layers: int = 25) -> None:
        super().__init__()
        self.encoder = AudioFrameEncoder(dim, out_dim, num_token, need_global)
        self.weights = nn.Parameter(torch.ones(1, num_layers, 1, 1) * 0.01)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``features`` (B, layers, dim, T) float32."""
        w = F.silu(self.weights.float())
        mixed = (features.float() * w / w.sum(dim=1, keepdim=True)).sum(dim=1)  # B dim T
        return self.encoder(mixed.transpose(1, 2).to(self.encoder.conv2.conv.weight.dtype))


class AudioInjector(nn.Module):
    """Per injected block: a norm of the video tokens (AdaLN on the global audio vector, or a
    plain LayerNorm) and a cross-attention to that latent frame's audio tokens."""

    def __init__(self, dim: int, num_heads: int, count: int, adain: bool) -> None:
        super().__init__()
        self.injector = nn.ModuleList(Attention(dim, num_heads) for _ in range(count))
        self.injector_pre_norm_feat = nn.ModuleList(
            nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) for _ in range(count))
        if adain:
            self.injector_adain_layers = nn.ModuleList(
                AdaLayerNorm(output_dim=dim * 2, embedding_dim=dim, chunk_dim=1) for _ in range(count))


class FramePackMotioner(nn.Module):
    """The previous clip's last latent frames as memory tokens: the newest ``buckets[0]`` frames at
    the DiT's patch size, the next ``buckets[1]`` at 2x and the oldest ``buckets[2]`` at 4x."""

    def __init__(self, inner_dim: int, num_heads: int, buckets: Sequence[int] = (1, 2, 16),
                 drop_mode: str = "drop") -> None:
        super().__init__()
        self.proj = nn.Conv3d(16, inner_dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(16, inner_dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(16, inner_dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))
        self.buckets = tuple(int(b) for b in buckets)
        self.drop_mode = drop_mode

    def forward(self, motion: torch.Tensor, tables: Sequence[torch.Tensor],
                add_last_motion: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """``motion`` (B, 16, T, h, w) -> tokens (B, N, C) and their rotary phases (N, d/2)."""
        b, c, t, h, w = motion.shape
        n1, n2, n4 = self.buckets
        total = n1 + n2 + n4
        padded = motion.new_zeros(b, c, total, h, w)
        keep = min(total, t)
        if keep:
            padded[:, :, -keep:] = motion[:, :, -keep:]
        drop = self.drop_mode == "drop"
        if add_last_motion < 2 and not drop:
            zeroed = sum(self.buckets[: len(self.buckets) - add_last_motion - 1])
            padded[:, :, -zeroed:] = 0
        lat4, lat2, lat1 = padded.split([n4, n2, n1], dim=2)
        tok1 = self.proj(lat1).flatten(2).transpose(1, 2)
        tok2 = self.proj_2x(lat2).flatten(2).transpose(1, 2)
        tok4 = self.proj_4x(lat4).flatten(2).transpose(1, 2)
        grids = []
        if drop and add_last_motion < 2:
            tok1 = tok1[:, :0]
        else:
            grids.append(((-n1, 0, 0), (-n1 + n1, h // 2, w // 2), (n1, h // 2, w // 2)))
        if drop and add_last_motion < 1:
            tok2 = tok2[:, :0]
        else:
            grids.append(((-(n1 + n2), 0, 0), (-(n1 + n2) + n2 // 2, h // 4, w // 4), (n2, h // 2, w // 2)))
        grids.append(((-total, 0, 0), (-total + n4 // 4, h // 8, w // 8), (n4, h // 2, w // 2)))
        freqs = torch.cat([grid_freqs(tables, *g) for g in grids])
        return torch.cat([tok1, tok2, tok4], dim=1), freqs


class WanS2VTransformer3DModel(ModelMixin, ConfigMixin):
    """The S2V denoiser; see the module docstring. ``forward`` takes batched tensors (every item
    the same shape) and returns the flow prediction for ``hidden_states``."""

    _no_split_modules = ["Block"]
    # Small and precision-sensitive: timestep MLPs, modulation tables, the audio conv encoder.
    _keep_in_fp32_modules = ["time_embedding", "time_projection", "modulation", "casual_audio_encoder"]

    @register_to_config
    def __init__(self, cond_dim: int = 0, audio_dim: int = 1024, num_audio_token: int = 4,
                 enable_adain: bool = False, adain_mode: str = "attn_norm",
                 audio_inject_layers: Sequence[int] = (0, 4, 8, 12, 16, 20, 24, 27),
                 zero_init: bool = False, zero_timestep: bool = False, enable_motioner: bool = False,
                 add_last_motion: bool = True, enable_tsm: bool = False, trainable_token_pos_emb: bool = False,
                 motion_token_num: int = 1024, enable_framepack: bool = True, framepack_drop_mode: str = "drop",
                 model_type: str = "s2v", patch_size: Sequence[int] = (1, 2, 2), text_len: int = 512,
                 in_dim: int = 16, dim: int = 2048, ffn_dim: int = 8192, freq_dim: int = 256, text_dim: int = 4096,
                 out_dim: int = 16, num_heads: int = 16, num_layers: int = 32, window_size: Sequence[int] = (-1, -1),
                 qk_norm: bool = True, cross_attn_norm: bool = True, eps: float = 1e-6,
                 num_wav2vec_layers: int = 25) -> None:
        super().__init__()
        if enable_motioner or not enable_framepack:
            raise NotImplementedError("only the FramePack motion memory (enable_framepack=True) is ported")
        if adain_mode != "attn_norm":
            raise NotImplementedError(f"adain_mode={adain_mode!r} is not ported (only 'attn_norm')")
        if not qk_norm or tuple(window_size) != (-1, -1):
            raise NotImplementedError("only qk_norm=True with full attention is ported")
        self.patch_size = tuple(patch_size)
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(dim, ffn_dim, num_heads, cross_attn_norm, eps) for _ in range(num_layers))
        self.head = Head(dim, out_dim, self.patch_size, eps)
        if cond_dim > 0:
            self.cond_encoder = nn.Conv3d(cond_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.casual_audio_encoder = CausalAudioEncoder(audio_dim, dim, num_audio_token, enable_adain,
                                                       num_layers=num_wav2vec_layers)
        # Injected blocks in block order (upstream matches them by name, which gives this order).
        self.inject_at = {blk: i for i, blk in enumerate(sorted(set(int(b) for b in audio_inject_layers)))}
        self.audio_injector = AudioInjector(dim, num_heads, len(self.inject_at), enable_adain)
        self.trainable_cond_mask = nn.Embedding(3, dim)
        self.frame_packer = FramePackMotioner(dim, num_heads, (1, 2, 16), framepack_drop_mode)
        head_dim = dim // num_heads
        # Complex rotary tables per axis (frames, rows, columns); not a buffer: .to(dtype) must not touch them.
        split = (head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6))
        self._tables = [rope_table(1024, s) for s in split]

    def _rope_tables(self, device: torch.device) -> list[torch.Tensor]:
        if self._tables[0].device != device:
            self._tables = [t.to(device) for t in self._tables]
        return self._tables

    def _time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) timesteps -> time embedding (B, C) and the six modulation vectors (B, 6, C), float32."""
        half = self.config.freq_dim // 2
        pos = t.to(torch.float64)
        sinus = torch.outer(pos, torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device) / half))
        emb = torch.cat([torch.cos(sinus), torch.sin(sinus)], dim=1).float()
        lin = self.time_embedding[0].weight
        e = self.time_embedding(emb.to(lin.dtype)).float()
        e0 = self.time_projection(e.to(lin.dtype)).float().unflatten(1, (6, self.config.dim))
        return e, e0

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                ref_latents: torch.Tensor, motion_latents: torch.Tensor, cond_states: torch.Tensor,
                audio_features: torch.Tensor, motion_frames: tuple[int, int] = (73, 19),
                drop_motion_frames: bool = False, add_last_motion: int = 2) -> torch.Tensor:
        """
        hidden_states:  (B, 16, F, h, w) noisy latents of the clip.
        timestep:       (B,) in [0, 1000].
        encoder_hidden_states: (B, L <= text_len, text_dim) prompt embeddings.
        ref_latents:    (B, 16, 1, h, w) the reference image's latents.
        motion_latents: (B, 16, T_m, h, w) latents of the previous frames (zeros for the first clip).
        cond_states:    (B, cond_dim, F, h, w) pose latents (zeros: no pose).
        audio_features: (B, wav2vec2 layers, audio_dim, 4 * F) per video frame of this clip.
        motion_frames:  (video frames, latent frames) of the motion memory the audio is padded by.
        """
        device = hidden_states.device
        dtype = self.patch_embedding.weight.dtype
        tables = self._rope_tables(device)
        b = hidden_states.shape[0]
        add_last_motion = int(self.config.add_last_motion) * add_last_motion

        # Audio: the first frame's features stand in for the motion memory's frames, then cut off.
        audio = torch.cat([audio_features[..., :1].expand(-1, -1, -1, motion_frames[0]), audio_features], dim=-1)
        audio_global, audio_tokens = self.casual_audio_encoder(audio)
        audio_tokens = audio_tokens[:, motion_frames[1]:].to(dtype)  # B F n C
        if audio_global is not None:
            audio_global = audio_global[:, motion_frames[1]:]

        x = self.patch_embedding(hidden_states.to(dtype))
        if self.config.cond_dim > 0:
            x = x + self.cond_encoder(cond_states.to(dtype))
        _, _, f, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        n_video = x.shape[1]
        ref = self.patch_embedding(ref_latents.to(dtype)).flatten(2).transpose(1, 2)
        freqs = [grid_freqs(tables, (0, 0, 0), (f, h, w), (f, h, w)),
                 grid_freqs(tables, (REF_FRAME_POSITION, 0, 0), (REF_FRAME_POSITION + 1, h, w), (1, h, w))]
        mot, mot_freqs = self.frame_packer(motion_latents.to(dtype), tables, add_last_motion)
        if drop_motion_frames:
            mot, mot_freqs = mot[:, :0], mot_freqs[:0]
        freqs.append(mot_freqs)
        freqs_all = torch.cat(freqs)
        kinds = torch.cat([torch.zeros(n_video, dtype=torch.long), torch.ones(ref.shape[1], dtype=torch.long),
                           torch.full((mot.shape[1],), 2, dtype=torch.long)]).to(device)
        x = torch.cat([x, ref, mot], dim=1)
        x = x + self.trainable_cond_mask(kinds).to(x.dtype)

        t = timestep.reshape(-1).expand(b)
        e, e0 = self._time(t)
        if self.config.zero_timestep:
            _, z0 = self._time(torch.zeros(1, device=device, dtype=t.dtype))
            e0 = torch.stack([e0, z0.expand(b, -1, -1)], dim=2)  # B 6 2 C
            split = n_video
        else:
            e0 = e0.unsqueeze(2).expand(-1, -1, 2, -1)
            split = 0

        ctx = encoder_hidden_states.to(dtype)
        if ctx.shape[1] < self.config.text_len:
            ctx = F.pad(ctx, (0, 0, 0, self.config.text_len - ctx.shape[1]))
        ctx = self.text_embedding(ctx)

        for idx, block in enumerate(self.blocks):
            x = block(x, e0, split, freqs_all, ctx)
            if idx in self.inject_at:
                x = self._inject_audio(self.inject_at[idx], x, n_video, f, audio_tokens, audio_global)

        out = self.head(x[:, :n_video], e)
        return self._unpatchify(out, (f, h, w)).float()

    def _inject_audio(self, i: int, x: torch.Tensor, n_video: int, frames: int, tokens: torch.Tensor,
                      glob: torch.Tensor | None) -> torch.Tensor:
        inj = self.audio_injector
        video = x[:, :n_video].reshape(x.shape[0] * frames, n_video // frames, -1)
        if glob is not None:
            normed = inj.injector_adain_layers[i](video, temb=glob.flatten(0, 1)[:, 0].to(video.dtype))
        else:
            normed = inj.injector_pre_norm_feat[i](video)
        res = inj.injector[i](normed, context=tokens.flatten(0, 1))
        res = res.reshape(x.shape[0], n_video, -1)
        return torch.cat([x[:, :n_video] + res, x[:, n_video:]], dim=1)

    def _unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, c = x.shape[0], self.config.out_dim
        pf, ph, pw = self.patch_size
        f, h, w = grid
        x = x.view(b, f, h, w, pf, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(b, c, f * pf, h * ph, w * pw)

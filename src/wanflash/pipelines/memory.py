"""Memory plans: where the Wan model's weights live on a GPU, and how much GPU memory a job needs.

Pure data and arithmetic (no torch import): ``wanflash doctor``, the README table and the engine
all use the same functions. A plan is one of

* ``full``: transformers, VAE and text encoder resident on the GPU;
* ``text_encoder_cpu``: the same without the umT5 text encoder, which stays in CPU memory and is
  streamed to the GPU layer by layer while it encodes (diffusers group offloading, leaf level);
* ``model_offload``: diffusers ``enable_model_cpu_offload``: one component on the GPU at a time;
* ``group_offload``: diffusers ``apply_group_offloading``: transformer blocks streamed one group at a
  time (with a CUDA stream prefetching the next), everything else leaf by leaf;

plus three switches: fp8 weight storage of the transformers (diffusers layerwise casting:
float8_e4m3fn in memory, computed in bf16), VAE tiling (decode in overlapping tiles) and native
1080p generation. ``auto`` (:func:`choose_plan`) takes the first plan, in that order, whose
estimated peak fits the GPU, trying untiled before tiled VAE at each step.

The estimate (:func:`estimate`) is built from the exact parameter counts of the published
checkpoints (``published-layouts.json``; the block structure is recomputed from the published
configs and a test checks it adds up to those counts) and a counted model of the largest live
tensors of each stage. It is what ``torch.cuda.max_memory_allocated`` should report, not the
CUDA context or allocator slack (``fits`` leaves room for those). The activation coefficients
are counted from diffusers 0.42.1's code, not yet measured on a GPU: ``bench/gpu_latency.py``
prints the measured peak of every plan next to this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from wanflash.pipelines.profiles import Profile, grid_size

GiB = 1024**3
PlanName = Literal["full", "text_encoder_cpu", "model_offload", "group_offload"]
PLAN_ORDER: tuple[PlanName, ...] = ("full", "text_encoder_cpu", "model_offload", "group_offload")
PLAN_HELP = {
    "full": "everything resident on the GPU",
    "text_encoder_cpu": "transformers + VAE on the GPU; umT5 in CPU memory, streamed per layer while encoding",
    "model_offload": "diffusers enable_model_cpu_offload: one component on the GPU at a time",
    "group_offload": "diffusers group offloading: transformer blocks streamed from CPU memory, one group at a time",
}
# GPU memory kept out of the estimate's budget: CUDA context, cuBLAS/cuDNN workspaces, allocator slack.
RESERVE_BYTES = int(1.5 * GiB)
USABLE_FRACTION = 0.92


# -- published layouts -------------------------------------------------------------------------

@dataclass(frozen=True)
class DiT:
    """A ``WanTransformer3DModel`` config, the fields that decide its size."""

    dim: int
    ffn: int
    layers: int
    in_channels: int
    out_channels: int
    text_dim: int = 4096
    freq_dim: int = 256
    patch: tuple[int, int, int] = (1, 2, 2)

    @property
    def block_params(self) -> int:
        """One ``WanTransformerBlock``: self- and cross-attention (q, k, v, out + RMS norms), the
        affine cross-attention norm, the FFN and the 6-way modulation table."""
        d, f = self.dim, self.ffn
        return 8 * d * d + 2 * d * f + f + 21 * d

    @property
    def other_params(self) -> int:
        """Everything outside the blocks: patch embedding, time and text embedders, head."""
        d = self.dim
        pt, ph, pw = self.patch
        patch = self.in_channels * d * pt * ph * pw + d
        time = self.freq_dim * d + d + d * d + d + 6 * d * d + 6 * d
        text = self.text_dim * d + d + d * d + d
        head = d * self.out_channels * pt * ph * pw + self.out_channels * pt * ph * pw + 2 * d
        return patch + time + text + head

    @property
    def params(self) -> int:
        return self.other_params + self.layers * self.block_params


@dataclass(frozen=True)
class UMT5Encoder:
    vocab: int = 256384
    d_model: int = 4096
    d_ff: int = 10240
    layers: int = 24
    heads: int = 64
    d_kv: int = 64
    buckets: int = 32

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.d_model

    @property
    def block_params(self) -> int:
        inner = self.heads * self.d_kv
        attention = 4 * self.d_model * inner + self.buckets * self.heads + self.d_model
        ffn = 2 * self.d_model * self.d_ff + self.d_ff * self.d_model + self.d_model  # gated-gelu
        return attention + ffn

    @property
    def params(self) -> int:
        return self.embedding_params + self.layers * self.block_params + self.d_model


# Exact counts of published-layouts.json ("exact_parameter_counts"); tests pin the configs to them.
WAN22_VAE_PARAMS = 704_688_668
WAN21_VAE_PARAMS = 126_892_531
DIT_5B = DiT(dim=3072, ffn=14336, layers=30, in_channels=48, out_channels=48)
DIT_A14B_I2V = DiT(dim=5120, ffn=13824, layers=40, in_channels=36, out_channels=16)
DIT_A14B_T2V = DiT(dim=5120, ffn=13824, layers=40, in_channels=16, out_channels=16)
UMT5_XXL = UMT5Encoder()
TEXT_TOKENS = 512


@dataclass(frozen=True)
class Layout:
    """What a real profile loads: its transformers (each once), text encoder and VAE."""

    profile: str
    transformers: tuple[DiT, ...]  # resident set: the I2V experts (and T2V experts when t2v/ is there)
    t2v_transformers: tuple[DiT, ...]  # extra transformers loaded from t2v/
    vae_params: int
    vae_px_channels: int  # channels x 4 frames per output pixel at the decoder's widest full-size stage
    token_stride: int  # pixels per token side (VAE spatial stride x patch)
    per_token_timesteps: bool  # expand_timesteps (TI2V-5B): modulation per token, not per sample
    experts_per_call: int  # transformers one denoising call alternates between


LAYOUTS: dict[str, Layout] = {
    # Wan2.2 VAE: decoder_base_dim 256 at half size (it patchifies by 2): 64 channels per output pixel.
    "wan2.2-ti2v-5b": Layout("wan2.2-ti2v-5b", (DIT_5B,), (), WAN22_VAE_PARAMS, 64, 32, True, 1),
    # Wan2.1 VAE: 96 channels at full size in its last decoder stage.
    "wan2.2-i2v-a14b": Layout("wan2.2-i2v-a14b", (DIT_A14B_I2V, DIT_A14B_I2V), (DIT_A14B_T2V, DIT_A14B_T2V),
                              WAN21_VAE_PARAMS, 96, 16, False, 2),
}


# -- activations -------------------------------------------------------------------------------

def tokens(layout: Layout, width: int, height: int, frames: int) -> int:
    """Transformer tokens of one clip: latent frames x (height / stride) x (width / stride)."""
    return ((frames - 1) // 4 + 1) * (height // layout.token_stride) * (width // layout.token_stride)


def dit_activation_bytes(dit: DiT, n_tokens: int, *, per_token_timesteps: bool, batch: int = 1) -> int:
    """Largest live transient of one transformer forward (bf16 compute).

    Counted from diffusers' ``WanTransformerBlock``: the FFN holds its bf16 input projection and
    GELU output (4 x ffn bytes per token) next to the float32 norm/residual temporaries and the
    hidden state (24 x dim bytes per token covers q, k, v, rotary temporaries and float32 norms).
    With per-token timesteps (TI2V-5B) the modulation is per token: a bf16 (tokens, 6, dim)
    projection plus its float32 copy inside every block (36 x dim bytes per token)."""
    per_token = 4 * dit.ffn + 24 * dit.dim + (36 * dit.dim if per_token_timesteps else 0)
    return batch * n_tokens * per_token


def text_encoder_activation_bytes(te: UMT5Encoder = UMT5_XXL, batch: int = 1) -> int:
    """umT5 over 512 tokens: gated FFN in float32 plus explicit attention scores."""
    return batch * (TEXT_TOKENS * (8 * te.d_ff + 16 * te.d_model) + 2 * te.heads * TEXT_TOKENS**2 * 4)


VAE_TILE = 256  # AutoencoderKLWan's default tile_sample_min_height/width


def vae_activation_bytes(layout: Layout, width: int, height: int, frames: int, *, tiled: bool) -> int:
    """VAE decode (float32): about six live maps of the widest full-size stage over one chunk of
    4 frames (tiled: one 256 x 256 tile), plus the decoded clip and its concatenated copy."""
    px = min(width * height, VAE_TILE * VAE_TILE) if tiled else width * height
    work = 6 * layout.vae_px_channels * 4 * px * 4
    video = 2 * 3 * frames * width * height * 4
    return work + video


# -- plans and estimates -----------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryPlan:
    name: PlanName
    fp8: bool = False  # transformer weights stored in float8_e4m3fn (layerwise casting)
    vae_tiling: bool = False
    native_1080p: bool = False  # generate 1080p requests at 1080p instead of upscaling
    reason: str = ""

    def label(self) -> str:
        extras = [x for x, on in (("fp8", self.fp8), ("vae-tiling", self.vae_tiling),
                                  ("native-1080p", self.native_1080p)) if on]
        return self.name + (" + " + " + ".join(extras) if extras else "")


@dataclass(frozen=True)
class Estimate:
    gpu_bytes: int  # estimated peak of torch.cuda.max_memory_allocated over one job
    host_bytes: int  # weights kept in CPU memory (pinned for group offloading)
    stage: str  # the stage that sets the peak

    @property
    def gpu_gib(self) -> float:
        return self.gpu_bytes / GiB

    @property
    def host_gib(self) -> float:
        return self.host_bytes / GiB


def generation_area(profile: str, *, native_1080p: bool) -> tuple[int, int]:
    """The largest 16:9 generation size the estimate is for (the profile's grid)."""
    grid = LAYOUTS[profile].token_stride
    if native_1080p:
        return 1920, -(-1080 // grid) * grid
    return 1280, 720 // grid * grid


CLIP_FRAMES = {"wan2.2-ti2v-5b": 121, "wan2.2-i2v-a14b": 81}


def estimate(profile: str, plan: MemoryPlan, *, t2v: bool = True, width: int | None = None,
             height: int | None = None, frames: int | None = None, batch: int = 1) -> Estimate:
    """Estimated GPU peak of one clip (the longest, at the largest size the plan generates) and
    the weights left in host memory, for a real profile. ``t2v``: A14B with its ``t2v/`` experts."""
    layout = LAYOUTS[profile]
    if width is None or height is None:
        width, height = generation_area(profile, native_1080p=plan.native_1080p)
    frames = frames or CLIP_FRAMES[profile]
    dits = layout.transformers + (layout.t2v_transformers if t2v else ())
    wbytes = 2  # bf16 weights (the VAE is float32)

    def dit_bytes(d: DiT) -> int:
        if plan.fp8:  # blocks in fp8; embeddings, norms and modulation stay bf16 (diffusers' skip patterns)
            return d.other_params * wbytes + d.layers * d.block_params
        return d.params * wbytes

    def dit_group_bytes(d: DiT) -> int:  # the non-block group plus the running and prefetched block
        return d.other_params * wbytes + 2 * d.block_params * (1 if plan.fp8 else wbytes)

    te = UMT5_XXL
    te_bytes = te.params * wbytes
    te_stream = te.embedding_params * wbytes + 2 * te.d_model * te.d_ff * wbytes  # leaf level: embedding + 2 linears
    vae_bytes = layout.vae_params * 4
    n = tokens(layout, width, height, frames)
    act_dit = dit_activation_bytes(dits[0], n, per_token_timesteps=layout.per_token_timesteps, batch=batch)
    act_te = text_encoder_activation_bytes(te, batch)
    act_vae = vae_activation_bytes(layout, width, height, frames, tiled=plan.vae_tiling)
    all_dit = sum(dit_bytes(d) for d in dits)
    largest_dit = max(dit_bytes(d) for d in dits)

    if plan.name == "full":
        resident = all_dit + te_bytes + vae_bytes
        stages = {"text encode": act_te, "denoise": act_dit, "VAE": act_vae}
        stage = max(stages, key=stages.__getitem__)
        return Estimate(resident + stages[stage], 0, stage)
    if plan.name == "text_encoder_cpu":
        resident = all_dit + vae_bytes
        stages = {"text encode": te_stream + act_te, "denoise": act_dit, "VAE": act_vae}
        stage = max(stages, key=stages.__getitem__)
        return Estimate(resident + stages[stage], te_bytes, stage)
    if plan.name == "model_offload":
        stages = {"text encode": te_bytes + act_te, "denoise": largest_dit + act_dit, "VAE": vae_bytes + act_vae}
        stage = max(stages, key=stages.__getitem__)
        return Estimate(stages[stage], all_dit + te_bytes + vae_bytes, stage)
    if plan.name == "group_offload":
        stages = {"text encode": te_stream + act_te,
                  "denoise": max(dit_group_bytes(d) for d in dits) + act_dit,
                  "VAE": act_vae + 64 * 1024**2}
        stage = max(stages, key=stages.__getitem__)
        return Estimate(stages[stage], all_dit + te_bytes + vae_bytes, stage)
    raise ValueError(f"unknown memory plan {plan.name!r}")


def fits(est: Estimate, gpu_total_bytes: int) -> bool:
    """Whether an estimated peak leaves room for the CUDA context and the allocator's slack."""
    return est.gpu_bytes <= USABLE_FRACTION * gpu_total_bytes - RESERVE_BYTES


def profile_native_1080p(profile: str) -> bool:
    """Whether the published weights of ``profile`` were trained at 1080p. Neither Wan2.2 profile
    was (Wan-AI publishes 720p sizes only: 1280x704 for TI2V-5B, 1280x720 / 832x480 for A14B), so
    ``auto`` upscales; ``WANFLASH_NATIVE_1080P=on`` asks for native generation anyway."""
    return False


def choose_plan(profile: str, gpu_total_bytes: int | None, *, setting: str = "auto", fp8: bool = False,
                vae_tiling: str = "auto", native_1080p: str = "auto", t2v: bool = True) -> MemoryPlan:
    """The plan for ``profile`` on a GPU of ``gpu_total_bytes`` (None: no GPU, everything stays put).

    ``setting`` is ``auto`` or a plan name; ``vae_tiling`` and ``native_1080p`` are ``auto``, ``on``
    or ``off``. ``auto`` takes the first of :data:`PLAN_ORDER` that fits, untiled VAE before tiled;
    when nothing fits it returns ``group_offload`` with tiling (the least memory there is) and
    says so in ``reason``."""
    native = native_1080p == "on" or (native_1080p == "auto" and profile_native_1080p(profile))
    if profile not in LAYOUTS or gpu_total_bytes is None:
        name: PlanName = "full" if setting == "auto" else setting  # type: ignore[assignment]
        why = "no GPU: weights stay on the device they run on" if gpu_total_bytes is None else \
            f"profile {profile} is small: no estimate needed"
        return MemoryPlan(name, fp8=fp8, vae_tiling=vae_tiling == "on", native_1080p=native, reason=why)
    names = PLAN_ORDER if setting == "auto" else (setting,)
    tilings = {"on": (True,), "off": (False,), "auto": (False, True)}[vae_tiling]
    gib = gpu_total_bytes / GiB
    for name in names:
        for tiled in tilings:
            plan = MemoryPlan(name, fp8=fp8, vae_tiling=tiled, native_1080p=native)  # type: ignore[arg-type]
            est = estimate(profile, plan, t2v=t2v)
            if fits(est, gpu_total_bytes):
                how = "chosen" if setting == "auto" else "set"
                return replace(plan, reason=f"{how}: estimated peak {est.gpu_gib:.1f} GiB fits {gib:.0f} GiB")
    plan = MemoryPlan(names[-1], fp8=fp8, vae_tiling=tilings[-1], native_1080p=native)  # type: ignore[arg-type]
    est = estimate(profile, plan, t2v=t2v)
    return replace(plan, reason=f"does not fit: estimated peak {est.gpu_gib:.1f} GiB on {gib:.0f} GiB "
                                f"(try WANFLASH_FP8_WEIGHTS=1 or a larger GPU)")


def table_rows(gpus_gib: tuple[int, ...] = (24, 48, 80)) -> list[list[str]]:
    """The README's memory table: profile x plan, the estimated peak (bf16 and fp8 weights, VAE
    tiled when that lowers it), the stage that sets it, host memory, and which GPUs it fits."""
    rows = []
    for profile, t2v in (("wan2.2-ti2v-5b", False), ("wan2.2-i2v-a14b", False), ("wan2.2-i2v-a14b", True)):
        for name in PLAN_ORDER:
            cells = []
            for fp8 in (False, True):
                ests = [estimate(profile, MemoryPlan(name, fp8=fp8, vae_tiling=t), t2v=t2v) for t in (False, True)]
                cells.append(min(ests, key=lambda e: e.gpu_bytes))
            bf16, fp8_ = cells
            fit = [" / ".join("yes" if fits(e, g * GiB) else "no" for e in cells) for g in gpus_gib]
            rows.append([profile + (" + t2v/" if t2v else ""), name, f"{bf16.gpu_gib:.1f}", f"{fp8_.gpu_gib:.1f}",
                         bf16.stage, f"{bf16.host_gib:.0f}", *fit])
    return rows


def markdown_table(gpus_gib: tuple[int, ...] = (24, 48, 80)) -> str:
    head = ["profile", "plan", "peak GiB (bf16)", "peak GiB (fp8)", "peak in", "host GiB",
            *[f"fits {g} GB (bf16 / fp8)" for g in gpus_gib]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(gpus_gib)]
    return "\n".join(lines)


def generation_size(profile: Profile, plan: MemoryPlan, width: int, height: int) -> tuple[int, int]:
    """The size a request is generated at: the profile's grid, at most its native area, or, with
    ``native_1080p``, at the request's own area (a 1080p request is then generated at 1080p, not
    upscaled from 720p-class)."""
    max_area = max(profile.max_area, width * height) if plan.native_1080p else profile.max_area
    return grid_size(width, height, grid=profile.grid, max_area=max_area)


if __name__ == "__main__":  # python -m wanflash.pipelines.memory: the README's table
    print(markdown_table())

"""GPU acceptance run: every stage of the service at full size and real token counts, per memory plan.

One prepared script for the first session lent a GPU (one H100/H200, under 8 minutes, no weights):

1. **Stages, random weights, full size** (default). For each real profile it builds the published
   layout in memory (``WanTransformer3DModel``, umT5-XXL ``UMT5EncoderModel``, ``AutoencoderKLWan``
   with the configs of ``published-layouts.json``; random weights drawn from one pool, which does
   not change the time of a step) and hands it to the service's own ``WanVideoPipeline.adopt`` (attention backend,
   memory plan, compile: the last part of ``load``), then runs ``WanVideoPipeline.generate`` on
   a 5 s 720p image-to-video request exactly as a worker does: text encoder over 512 tokens,
   VAE encode of the condition, denoising at the real token count (TI2V-5B: 121 frames at
   1280x704 = 27,280 tokens with per-token timesteps, ``expand_timesteps``; A14B: 81 frames at
   1280x720 = 75,600 tokens, high- then low-noise expert), VAE decode, resize, PyAV encode.
   Each stage is timed (CUDA-synchronised) with its peak GPU memory; the job's peak is printed
   next to ``wanflash.pipelines.memory.estimate`` for the same plan, which is how the estimates
   in the README get checked. Rows: every memory plan (``full``, ``text_encoder_cpu``,
   ``model_offload``, ``group_offload``), then the speed settings the service exposes
   (``WANFLASH_ATTENTION_BACKEND``, ``WANFLASH_COMPILE``, ``WANFLASH_FP8_WEIGHTS``) on the plan
   ``auto`` picks for this GPU. ``--steps`` denoising steps are run (default 2: one per A14B
   expert) and the per-step time is reported; the profile's 4 steps are extrapolated from it.
   A row that would overrun ``--deadline`` seconds is skipped and says so.
2. **E2E with real weights** (``--weights-dir`` and ``--profile``): ``wanflash serve`` in a
   subprocess, one warm task, then ``--runs`` 5 s 720p I2V tasks timed from the REST submit to
   the end of the ``videoURL`` download, without audio, with native audio (``--audio-weights-dir``)
   and with a muxed input track; then the stages above on the real weights, per plan.

Not covered: the native-audio stage (ACE-Step or LTX-2) at full size with random weights is not built here
(it needs the audio backend to expose the same in-memory adoption; ``bench/audio.py`` times the
audio stage on the tiny models, and part 2 times it with real weights).

Results: a table on stdout, ``--json FILE``, and with ``--results FILE`` (default
``bench/RESULTS.md`` on a GPU, nothing in smoke mode) the table appended as a dated section.

``--device cpu --smoke`` runs the same code on a CPU in well under a minute: toy widths of the
same layouts (same classes, channels, patching, VAE strides, flags), a 64x64-class clip of 5 frames,
every plan applied (onload device = the CPU). Its figures are CPU figures for toy shapes, not GPU
numbers.

    python bench/gpu_latency.py --device cpu --smoke                # any machine, < 1 min
    python bench/gpu_latency.py                                     # GPU, no weights: < 8 min on an H100/H200
    python bench/gpu_latency.py --weights-dir /models/Wan2.2-TI2V-5B-Diffusers --profile wan2.2-ti2v-5b \\
        --audio-weights-dir /models/LTX-2 --json 5b.json
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import gc
import io
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import overhead

ANCHORS = {"wan2.2-i2v-a14b": ("LightX2V 4-step 14B, 1x H200", 44.0),
           "wan2.2-ti2v-5b": ("FastVideo distilled TI2V-5B, 1x H200", 16.0)}
PROFILES = ("wan2.2-ti2v-5b", "wan2.2-i2v-a14b")
PLANS = ("full", "text_encoder_cpu", "model_offload", "group_offload")

# Published configs (published-layouts.json; Wan-AI/Wan2.2-*-Diffusers).
UMT5 = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_decoder_layers=24,
            num_heads=64, relative_attention_num_buckets=32, relative_attention_max_distance=128,
            dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu", is_encoder_decoder=True,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
DIT = dict(patch_size=(1, 2, 2), text_dim=4096, freq_dim=256, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
LAYOUT = {
    "wan2.2-ti2v-5b": dict(
        transformer=dict(DIT, num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
                         ffn_dim=14336, num_layers=30),
        vae=dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
                 in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
        experts=1, boundary_ratio=None, expand_timesteps=True, flow_shift=5.0),
    "wan2.2-i2v-a14b": dict(
        transformer=dict(DIT, num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
                         ffn_dim=13824, num_layers=40),
        vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0),
        experts=2, boundary_ratio=0.9, expand_timesteps=False, flow_shift=3.0),
}
# --smoke: the same layouts at toy width and depth.
TOY_DIT = dict(num_attention_heads=2, attention_head_dim=8, ffn_dim=32, num_layers=2, text_dim=32, freq_dim=16)
TOY_UMT5 = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4)
TOY_VAE = {"wan2.2-ti2v-5b": dict(base_dim=4, decoder_base_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
           "wan2.2-i2v-a14b": dict(base_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)}
SMOKE_AREA, SMOKE_FRAMES = 64 * 64, 5


# -- helpers ------------------------------------------------------------------------------------

def _torch():  # type: ignore[no-untyped-def]
    import torch

    return torch


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if _torch().cuda.is_available() else "cpu"
    return name


def sync(device: str) -> None:
    if device.startswith("cuda"):
        _torch().cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        _torch().cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    if device.startswith("cuda"):
        return _torch().cuda.max_memory_allocated() / 2**30
    return None


def wav_data_uri(seconds: float, rate: int = 48000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(tone[:, None], 2, axis=1).tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


# -- part 1: E2E through the server -------------------------------------------------------------

def e2e(args: argparse.Namespace, profile: str, tmp: Path) -> list[dict[str, Any]]:
    import httpx

    port = c.free_port()
    argv = [c.python(), "-m", "wanflash.cli", "serve", "--port", str(port), "--data-dir", str(tmp / "serve"),
            "--profile", profile]
    env = {"WANFLASH_API_KEYS": overhead.API_KEY, "WANFLASH_PLAYGROUND": "0", "WANFLASH_DEVICE": args.device}
    if args.weights_dir:
        env["WANFLASH_WEIGHTS_DIR"] = args.weights_dir
    if args.lora_dir:
        env["WANFLASH_LORA_DIR"] = args.lora_dir
    native = profile == "tiny" or bool(args.audio_weights_dir)
    if args.audio_weights_dir:
        env["WANFLASH_AUDIO_WEIGHTS_DIR"] = args.audio_weights_dir
    elif not native:
        env["WANFLASH_AUDIO_MODEL"] = "none"  # no audio weights: the native row is skipped
    jpeg = overhead.input_jpeg(1280, 720)
    req = argparse.Namespace(resolution="720p", duration=5, seed=42, format="MP4", quality=95)
    audio = wav_data_uri(5.0)
    rows = []
    with c.server_process(argv, port, tmp / "serve.log", env=env, ready_timeout=1800) as srv, \
            httpx.Client(headers={"Authorization": f"Bearer {overhead.API_KEY}"}, timeout=1800) as client:
        overhead.run_service(client, srv.url, overhead.wire_task(req, jpeg), 0.05, tmp / "warm.mp4")
        for mode in ("none", "native", "input track muxed"):
            if mode == "native" and not native:
                print("#  e2e native audio skipped: no --audio-weights-dir", flush=True)
                continue
            times = []
            for _ in range(args.runs):
                task = overhead.wire_task(req, jpeg)
                if mode != "none":
                    task["providerSettings"]["alibaba"]["audio"] = True
                if mode == "input track muxed":
                    task["inputs"]["audio"] = audio
                secs, _ = overhead.run_service(client, srv.url, task, 0.05, tmp / "e2e.mp4")
                times.append(secs)
            from wanflash.media.probe import probe_file

            info = probe_file(tmp / "e2e.mp4", decode=False)
            rows.append({"profile": profile, "audio": mode,
                         "runs": args.runs, "median_s": c.median(times), "min_s": min(times),
                         "video": f"{info.width}x{info.height} {info.frames} frames {info.video_codec}"
                                  f"{' + ' + info.audio_codec if info.audio_codec else ''}"})
            print(f"#  e2e {profile} audio={mode}: {[round(t, 2) for t in times]}", flush=True)
    return rows


# -- part 2/3: stages of one generate + encode, per speed setting ---------------------------------

class StageTimer:
    """Wraps callables to add their (synchronised) wall time and peak memory to a stage."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)
        if getattr(fn, "_stage_timed", False):
            return

        def timed(*a: Any, **k: Any) -> Any:
            sync(self.device)
            reset_peak(self.device)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync(self.device)
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
                p = peak_gb(self.device)
                if p is not None:
                    self.peak[stage] = max(self.peak.get(stage, 0.0), p)

        timed._stage_timed = True  # type: ignore[attr-defined]
        setattr(owner, attr, timed)




# -- part 1: full-size random-weight stages through the service's engine -------------------------

def random_pipelines(profile: str, *, smoke: bool, dtype: Any) -> Any:
    """The published layout of ``profile`` as a ``BatchImageI2VPipeline`` with random weights, on the CPU
    (where ``from_pretrained`` leaves weights before the plan places them)."""
    torch = _torch()
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from wanflash.pipelines.tiny import _tokenizer
    from wanflash.pipelines.wan import BatchImageI2VPipeline

    lay = LAYOUT[profile]
    tcfg = {**lay["transformer"], **(TOY_DIT if smoke else {})}
    ecfg = {**UMT5, **(TOY_UMT5 if smoke else {})}
    vcfg = {**lay["vae"], **(TOY_VAE[profile] if smoke else {})}
    from transformers.initialization import no_init_weights

    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)  # allocate in the run dtype directly (28 GB per A14B expert in bf16)
        with no_init_weights():  # torch's per-layer init of 34B parameters would take minutes on a CPU
            experts = [WanTransformer3DModel(**tcfg).eval() for _ in range(lay["experts"])]
            text_encoder = UMT5EncoderModel(UMT5Config(**ecfg)).eval()
    finally:
        torch.set_default_dtype(old)
    for i, module in enumerate([*experts, text_encoder]):
        fill_random(module, seed=i)
    vae = AutoencoderKLWan(**vcfg).eval()  # float32, as the service loads it
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=lay["flow_shift"])
    pipe = BatchImageI2VPipeline(tokenizer=_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                 transformer=experts[0], transformer_2=experts[1] if len(experts) > 1 else None,
                                 boundary_ratio=lay["boundary_ratio"], expand_timesteps=lay["expand_timesteps"])
    return pipe


def fill_random(module: Any, seed: int, pool_size: int = 1 << 22) -> None:
    """Every parameter filled from one pool of N(0, 0.02) draws: random-looking weights at memory-copy
    speed (the values do not change the time of a step; the RNG would be the slow part)."""
    torch = _torch()
    pool = torch.randn(pool_size, generator=torch.Generator().manual_seed(seed)) * 0.02
    with torch.no_grad():
        for p in module.parameters():
            flat = p.view(-1)
            src = pool.to(p.dtype)
            for i in range(0, flat.numel(), pool_size):
                n = min(pool_size, flat.numel() - i)
                flat[i:i + n].copy_(src[:n])


def engine(args: argparse.Namespace, profile: str, plan: str, *, backend: str | None = None,
           compile_: bool = False, fp8: bool = False) -> Any:
    """The service's ``WanVideoPipeline`` for ``profile`` with ``plan`` and speed settings, adopting
    random full-size pipelines (or loading ``--weights-dir`` through ``load``)."""
    from wanflash.config import Settings
    from wanflash.pipelines.profiles import get_profile
    from wanflash.pipelines.wan import WanVideoPipeline

    settings = Settings(profile=profile, device=args.device, memory=plan, fp8_weights=fp8, compile=compile_,
                        attention_backend=None if backend in (None, "native") else backend, audio_model="none",
                        weights_dir=args.weights_dir, lora_dir=args.lora_dir)
    prof = dataclasses.replace(get_profile(profile), steps=args.steps)
    if args.smoke:  # a clip of 64x64-class and 5 frames
        prof = dataclasses.replace(prof, max_area=SMOKE_AREA, max_clip_frames=SMOKE_FRAMES)
    eng = WanVideoPipeline(settings.engine, prof, Path(args.weights_dir or "/nonexistent"),
                           lora_dir=Path(args.lora_dir) if args.lora_dir else None)
    if args.weights_dir:
        eng.load()
    else:
        # Image-to-video only: no text-to-video pipeline (the 5B's would share the same modules, and
        # diffusers 0.42.1's from_pipe casts shared modules to float32, issue #17 part 1).
        eng.adopt(random_pipelines(profile, smoke=args.smoke, dtype=eng.dtype), None)
    return eng


def run_stages(args: argparse.Namespace, eng: Any, profile: str) -> dict[str, Any]:
    from PIL import Image

    from wanflash.contract.validation import ResolvedInputs, parse_video_task, plan_job
    from wanflash.media.encode import encode_video
    from wanflash.pipelines.memory import LAYOUTS, estimate
    from wanflash.pipelines.memory import tokens as n_tokens
    from wanflash.pipelines.profiles import get_profile

    jpeg = overhead.input_jpeg(1280, 720)
    req = argparse.Namespace(resolution="720p", duration=5, seed=42, format="MP4", quality=95)
    spec = plan_job(parse_video_task(overhead.wire_task(req, jpeg)), profile=get_profile(profile),
                    inputs=ResolvedInputs(image_key="bench", image_size=(1280, 720)))
    if args.smoke:
        spec = spec.model_copy(update={"num_frames": SMOKE_FRAMES})
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    timer = StageTimer(args.device)
    i2v = eng.i2v
    timer.wrap(i2v, "encode_prompt", "text encode")
    timer.wrap(i2v.vae, "encode", "VAE encode")
    timer.wrap(i2v.vae, "decode", "VAE decode")
    for t in eng.transformers():
        timer.wrap(t, "forward", "denoise")
    sync(args.device)
    reset_peak(args.device)
    t0 = time.perf_counter()
    result = eng.generate(spec, image=image)
    sync(args.device)
    gen = time.perf_counter() - t0
    peak = peak_gb(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        encode_video(result.videos[0], Path(tmp) / "out.mp4", fps=spec.fps, fmt="MP4", quality=spec.output_quality)
        enc = time.perf_counter() - t1
    gw, gh = result.info["generation_size"]
    frames = result.info["clips"][0]
    stage_s = dict(timer.seconds)
    stage_s["other (scheduler, offload hooks, resize)"] = gen - sum(timer.seconds.values())
    stage_s["PyAV encode"] = enc
    steps = eng.profile.steps
    per_step = timer.seconds.get("denoise", 0.0) / max(1, steps * len(result.info["clips"]))
    out = {"generate_s": gen, "encode_s": enc, "stage_s": stage_s, "stage_peak_gb": dict(timer.peak),
           "peak_gib": peak, "steps": steps, "denoise_s_per_step": per_step,
           "size": f"{gw}x{gh}x{frames}", "plan": eng.plan.label()}
    if profile in LAYOUTS and not args.smoke:
        out["tokens"] = n_tokens(LAYOUTS[profile], gw, gh, frames)
        out["estimate_gib"] = estimate(profile, eng.plan, t2v=False, width=gw, height=gh, frames=frames).gpu_gib
        prof_steps = get_profile(profile).steps
        out["total_s_at_profile_steps"] = gen - timer.seconds.get("denoise", 0.0) + per_step * prof_steps + enc
    return out


def rows_to_run(args: argparse.Namespace, profile: str) -> list[dict[str, Any]]:
    """Every plan with the default speed settings, then each speed setting on the plan auto picks."""
    from wanflash.pipelines.memory import choose_plan

    rows = [dict(plan=p) for p in args.plans.split(",")]
    if args.speed:
        total = _torch().cuda.get_device_properties(0).total_memory if args.device.startswith("cuda") else None
        auto = choose_plan(profile, total, t2v=False).name
        rows += [dict(plan=auto, backend=b) for b in args.backends.split(",") if b != "native"]
        rows += [dict(plan=auto, compile_=True), dict(plan=auto, fp8=True)]
    return rows


def stages_part(args: argparse.Namespace, started: float) -> list[dict[str, Any]]:
    out = []
    profiles = [args.profile] if args.weights_dir else args.profiles.split(",")
    for profile in profiles:
        for row in rows_to_run(args, profile):
            label = (f"attn={row.get('backend') or 'native'} compile={int(row.get('compile_', False))} "
                     f"fp8={int(row.get('fp8', False))}")
            r: dict[str, Any] = {"profile": profile, "memory": row["plan"], "setting": label}
            if time.perf_counter() - started > args.deadline:
                r["error"] = f"skipped: past the {args.deadline:.0f} s deadline"
            else:
                eng = None
                try:
                    t0 = time.perf_counter()
                    eng = engine(args, profile, row["plan"], backend=row.get("backend"),
                                 compile_=row.get("compile_", False), fp8=row.get("fp8", False))
                    r["build_s"] = time.perf_counter() - t0
                    r.update(run_stages(args, eng, profile))
                except Exception as exc:  # an unavailable kernel or an OOM is a result of the run, not a crash
                    r["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                finally:
                    del eng
                    gc.collect()
                    if args.device.startswith("cuda"):
                        _torch().cuda.empty_cache()
            out.append(r)
            print(f"#  {profile} {row['plan']} {label}: "
                  f"{r.get('error') or round(r['generate_s'], 2)}", flush=True)
    return out


def _fmt_stages(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    parts = []
    for k, v in r["stage_s"].items():
        peak = r["stage_peak_gb"].get(k)
        parts.append(f"{k} {v:.2f}s" + (f" ({peak:.1f} GiB)" if peak is not None else ""))
    return "; ".join(parts)


def stage_table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "-" if v is None else fmt.format(v)

    return c.table(["profile", "memory plan", "speed setting", "size", "tokens", "generate s", "s / step",
                    "est. s at 4 steps", "peak GiB", "estimate GiB", "stages"],
                   [[r["profile"], r.get("plan", r["memory"]), r["setting"], r.get("size", "-"), r.get("tokens", "-"),
                     f(r.get("generate_s")), f(r.get("denoise_s_per_step"), "{:.3f}"),
                     f(r.get("total_s_at_profile_steps")), f(r.get("peak_gib"), "{:.1f}"),
                     f(r.get("estimate_gib"), "{:.1f}"), _fmt_stages(r)] for r in rows])


def append_results(path: str, env: dict[str, Any], args: argparse.Namespace, text: str) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"\n## GPU acceptance run ({when}, `{' '.join(sys.argv)}`)\n\n")
        fh.write(f"{c.header('gpu_latency', env, device=args.device, smoke=args.smoke)}\n\n{text}\n")


# -- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--smoke", action="store_true", help="toy widths, a tiny clip: proves the script on a CPU")
    ap.add_argument("--quick", action="store_true", help="one E2E run per audio setting")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="random-weight profiles to run")
    ap.add_argument("--plans", default=",".join(PLANS), help="memory plans to run (WANFLASH_MEMORY values)")
    ap.add_argument("--steps", type=int, default=2, help="denoising steps per run (2: one per A14B expert)")
    ap.add_argument("--speed", action=argparse.BooleanOptionalAction, default=None,
                    help="also attention backends, compile and fp8 weights (default: on a GPU, off in smoke)")
    ap.add_argument("--backends", default="native,flash,_native_cudnn,sage",
                    help="attention backends for --speed (diffusers names; 'native' = SDPA default)")
    ap.add_argument("--deadline", type=float, default=420.0, help="skip rows that would start after this many s")
    ap.add_argument("--weights-dir", default=None, help="diffusers-format weights for --profile (part 2)")
    ap.add_argument("--profile", default=None, choices=list(PROFILES))
    ap.add_argument("--lora-dir", default=None, help="4-step distilled LoRAs for wan2.2-i2v-a14b")
    ap.add_argument("--audio-weights-dir", default=None,
                    help="diffusers-format weights of the WANFLASH_AUDIO_MODEL backend (native audio in E2E)")
    ap.add_argument("--runs", type=int, default=3, help="E2E tasks per audio setting")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--results", default=None, help="append the table to this file (GPU default: bench/RESULTS.md)")
    args = ap.parse_args()
    args.device = resolve_device(args.device)
    on_gpu = args.device.startswith("cuda")
    if args.quick:
        args.runs = 1
    if args.speed is None:
        args.speed = on_gpu and not args.smoke
    if args.weights_dir and not args.profile:
        ap.error("--weights-dir needs --profile")
    if args.results is None and on_gpu and not args.smoke:
        args.results = str(Path(__file__).with_name("RESULTS.md"))
    started = time.perf_counter()
    env = c.environment()
    print(c.header("gpu_latency", env, device=args.device, smoke=args.smoke, steps=args.steps,
                   weights=args.weights_dir or "none (random full-size layouts)"), flush=True)
    if not on_gpu:
        print("# NOTE: no GPU: every figure below is a CPU figure (toy shapes with --smoke); "
              "GPU numbers are NOT measured by this run.", flush=True)
    out: dict[str, Any] = {"env": env, "args": vars(args)}
    text = []
    with tempfile.TemporaryDirectory(prefix="wanflash-gpu-") as tmp_name:
        if args.weights_dir:
            rows = e2e(args, args.profile, Path(tmp_name))
            out["e2e"] = rows
            table = c.table(["profile", "audio", "runs", "median submit->URL s", "min s", "output"],
                            [[r["profile"], r["audio"], r["runs"], r["median_s"], r["min_s"], r["video"]]
                             for r in rows])
            print(table, flush=True)
            text.append(table)
            if on_gpu and args.profile in ANCHORS:
                name, anchor = ANCHORS[args.profile]
                best = min(r["median_s"] for r in rows)
                text.append(f"vs anchor {name}: {anchor:.0f} s; ours {best:.1f} s ({best / anchor:.2f}x)")
                print(text[-1])
    rows = stages_part(args, started)
    out["stages"] = rows
    table = stage_table(rows)
    print()
    print(table, flush=True)
    text.append(table)
    print(f"# wall {time.perf_counter() - started:.0f} s", flush=True)
    if args.results:
        append_results(args.results, env, args, "\n\n".join(text))
    c.finish(env, args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

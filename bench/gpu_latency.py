"""GPU latency: submit-to-URL seconds for 5 s 720p image-to-video, stage times, peak GPU memory,
profile and speed-setting comparisons, and per-step time of full-size Wan transformers.

Four parts (each prints a table; ``--json`` writes them all):

1. **E2E** (``--weights-dir`` with ``--profile``; or ``--e2e-profile tiny`` without weights):
   ``wanflash serve`` in a subprocess with that profile, warm (one task first), then
   ``--runs`` tasks of 5 s 720p I2V, each timed from the REST submit to the end of the download
   of its ``videoURL``, in three audio modes: none (``audio: false``), native (``audio: true``:
   the LTX-2 video-to-audio stage; needs ``--audio-weights-dir`` for a real profile, the tiny
   profile has its own tiny model) and an ``inputs.audio`` track (5 s WAV, probed and muxed).
2. **Stages** (same profile, in this process): one warm ``generate`` + encode with timers on
   the diffusers components: text encoding, VAE encode of the condition, denoising (each
   transformer call), VAE decode, post-processing (resize/crop to the requested size), PyAV
   encode; peak GPU memory per stage. ``--speed`` repeats it for each speed setting.
3. **Speed settings** (``--speed``): attention backend (``--backends``, diffusers'
   ``set_attention_backend``), ``torch.compile`` of the repeated blocks, and fp8 *weight storage*
   (diffusers ``enable_layerwise_casting``: weights kept in float8_e4m3fn, computed in bf16; it
   saves memory, it is not fp8 matmuls, which this project does not implement).
4. **Full-size transformer, random weights**: ``WanTransformer3DModel`` with the published
   dimensions of Wan2.2-TI2V-5B (dim 3072 = 24 heads x 128, FFN 14336, 30 layers, 48 latent
   channels, VAE stride 4x16x16) and one Wan2.2-I2V-A14B expert (dim 5120 = 40 x 128, FFN 13824,
   40 layers, 36 in / 16 out channels, VAE stride 4x8x8), one forward pass (= one distilled step,
   no CFG) at the real token count of 5 s 720p: 5B 121 frames at 1280x704 -> 31x22x40 = 27,280
   tokens; A14B 81 frames at 1280x720 -> 21x45x80 = 75,600 tokens; 512 text tokens. Weights are
   random (no weights can be downloaded here), which does not change the time of a step.

On a GPU the results are compared with the anchors (engines.md): 44 s on one H200 for a 4-step
distilled 14B (LightX2V) and 16 s for distilled TI2V-5B (FastVideo, DiT alone 2.64 s).

``--device cpu --smoke`` proves the script on a CPU: the tiny model end to end and per stage,
and the full-size transformers cut to ``--blocks`` block(s) at a small latent; the per-step
figures it prints are CPU figures for that reduced shape, NOT GPU numbers.

    python bench/gpu_latency.py --device cpu --smoke                       # any machine, minutes
    python bench/gpu_latency.py                                            # GPU: tiny + full-size transformers
    python bench/gpu_latency.py --weights-dir /models/Wan2.2-TI2V-5B-Diffusers --profile wan2.2-ti2v-5b --speed
    python bench/gpu_latency.py --weights-dir /models/Wan2.2-I2V-A14B-Diffusers --profile wan2.2-i2v-a14b \\
        --lora-dir /models/wan22-lightning --speed --backends native,flash,sage --json a14b.json
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
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
FASTVIDEO_5B_DIT_S = 2.64  # DiT alone, FA3 + DMD + compile, 1x H200 (engines.md)

# Published transformer dimensions (Wan-AI/Wan2.2-*-Diffusers transformer/config.json; the
# original repo's wan/configs/wan_ti2v_5B.py and wan_i2v_A14B.py). 720p x 5 s latent shapes.
FULL_SIZE = {
    "ti2v-5b": {
        "config": dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
                       out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6),
        "latent": (48, 31, 44, 80),  # 121 frames, 704x1280, VAE stride 4x16x16
        "steps": 4, "experts_per_step": 1,
    },
    "i2v-a14b-expert": {
        "config": dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6),
        "latent": (36, 21, 90, 160),  # 81 frames, 720x1280, VAE stride 4x8x8
        "steps": 4, "experts_per_step": 1,  # each step runs ONE expert (high- or low-noise)
    },
}
TEXT_TOKENS = 512
SMOKE_LATENT = {"ti2v-5b": (48, 2, 8, 8), "i2v-a14b-expert": (36, 2, 8, 8)}


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
        env["WANFLASH_AUDIO_MODEL"] = "none"  # no LTX-2 weights: the native row is skipped
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


def build_pipeline(args: argparse.Namespace, profile: str, data_dir: Path, backend: str | None,
                   compile_: bool, fp8: bool) -> Any:
    from wanflash.config import Settings
    from wanflash.pipelines.registry import create_pipeline

    settings = Settings(data_dir=data_dir, profile=profile, device=args.device,
                        weights_dir=args.weights_dir if profile != "tiny" else None,
                        lora_dir=args.lora_dir if profile != "tiny" else None,
                        attention_backend=None if backend in (None, "native") else backend, compile=compile_,
                        audio_model="none")  # the video pipeline alone; bench/audio.py times the audio stage
    pipe = create_pipeline(settings)
    pipe.load()
    if fp8:
        import torch

        for t in pipe._transformers(pipe.i2v, pipe.t2v):
            t.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=pipe.dtype)
    return pipe


def stages(args: argparse.Namespace, pipe: Any, profile: str) -> dict[str, Any]:
    from PIL import Image

    from wanflash.api.validation import ResolvedInputs, parse_video_task, plan_job
    from wanflash.media.encode import encode_video
    from wanflash.pipelines.profiles import get_profile

    jpeg = overhead.input_jpeg(1280, 720)
    req = argparse.Namespace(resolution="720p", duration=5, seed=42, format="MP4", quality=95)
    spec = plan_job(parse_video_task(overhead.wire_task(req, jpeg)), profile=get_profile(profile),
                    inputs=ResolvedInputs(image_key="bench", image_size=(1280, 720)))
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    timer = StageTimer(args.device)
    i2v = pipe.i2v
    timer.wrap(i2v, "encode_prompt", "text encode")
    timer.wrap(i2v.vae, "encode", "VAE encode (condition)")
    timer.wrap(i2v.vae, "decode", "VAE decode")
    for t in pipe._transformers(pipe.i2v, pipe.t2v):
        timer.wrap(t, "forward", "denoise (transformer)")
    steps: list[float] = []
    pipe.generate(spec, image=image)  # warm (compile, kernels, allocator)
    timer.seconds.clear()
    timer.peak.clear()
    last = time.perf_counter()

    def on_step(step: int, total: int, stage: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps.append(now - last)
        last = now

    sync(args.device)
    reset_peak(args.device)
    t0 = time.perf_counter()
    last = t0
    result = pipe.generate(spec, on_step, image=image)
    sync(args.device)
    gen = time.perf_counter() - t0
    overall_peak = peak_gb(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        encode_video(result.videos[0], Path(tmp) / "out.mp4", fps=spec.fps, fmt="MP4", quality=spec.output_quality)
        enc = time.perf_counter() - t1
    named = sum(timer.seconds.values())
    out = {"generate_s": gen, "encode_s": enc, "total_s": gen + enc, "steps": len(steps),
           "stage_s": {**timer.seconds, "other (latents, scheduler, resize/crop to size)": gen - named,
                       "PyAV encode": enc},
           "stage_peak_gb": timer.peak, "peak_gb": overall_peak,
           "frames": f"{spec.num_frames} @ {spec.fps} fps, generated at {result.info.get('generation_size')}"}
    return out


def speed_grid(args: argparse.Namespace, profile: str, tmp: Path) -> list[dict[str, Any]]:
    combos = [(b, False, False) for b in args.backends.split(",")] if args.speed else [("native", False, False)]
    if args.speed:
        combos += [("native", True, False), ("native", False, True), (args.backends.split(",")[-1], True, True)]
    rows = []
    for backend, compile_, fp8 in combos:
        label = f"attn={backend} compile={int(compile_)} fp8-storage={int(fp8)}"
        try:
            pipe = build_pipeline(args, profile, tmp / "data", backend, compile_, fp8)
            r = stages(args, pipe, profile)
            del pipe
        except Exception as exc:  # an unavailable backend/kernel is a result of the run, not a crash
            r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            if args.device.startswith("cuda"):
                _torch().cuda.empty_cache()
        r.update(profile=profile, setting=label)
        rows.append(r)
        print(f"#  stages {profile} {label}: "
              f"{r.get('error') or round(r['total_s'], 2)}", flush=True)
    return rows


# -- part 4: full-size transformer per step ------------------------------------------------------

def transformer_step(args: argparse.Namespace, name: str, *, blocks: int | None, latent: tuple[int, ...],
                     backend: str = "native", compile_: bool = False, fp8: bool = False) -> dict[str, Any]:
    torch = _torch()
    from diffusers import WanTransformer3DModel

    spec = FULL_SIZE[name]
    cfg = dict(spec["config"])
    full_layers = cfg["num_layers"]
    if blocks:
        cfg["num_layers"] = blocks
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # allocate in the run dtype directly (28 GB for an A14B expert in bf16)
    try:
        with torch.device(args.device):
            model = WanTransformer3DModel(**cfg).eval()
    finally:
        torch.set_default_dtype(old)
    params = sum(p.numel() for p in model.parameters())
    if backend != "native":
        model.set_attention_backend(backend)
    if fp8:
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if compile_:
        model.compile_repeated_blocks(fullgraph=True)
    g = torch.Generator(args.device).manual_seed(0)
    x = torch.randn((1, *latent), generator=g, device=args.device, dtype=dtype)
    text = torch.randn((1, TEXT_TOKENS, cfg["text_dim"]), generator=g, device=args.device, dtype=dtype)
    t = torch.tensor([500], device=args.device)
    p = cfg["patch_size"]
    tokens = latent[1] // p[0] * (latent[2] // p[1]) * (latent[3] // p[2])
    times = []
    reset_peak(args.device)
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            sync(args.device)
            t0 = time.perf_counter()
            model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
            sync(args.device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    step = c.median(times)
    scale = full_layers / cfg["num_layers"]
    out = {"model": name, "tokens": tokens, "latent": "x".join(map(str, latent)), "layers_run": cfg["num_layers"],
           "params_b": params / 1e9, "dtype": str(dtype).replace("torch.", ""),
           "setting": f"attn={backend} compile={int(compile_)} fp8-storage={int(fp8)}",
           "step_s": step, "step_s_full_depth": step * scale, "extrapolated": scale != 1,
           "dit_s_4_steps": step * scale * spec["steps"] * spec["experts_per_step"], "peak_gb": peak_gb(args.device)}
    del model, x, text
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def full_size(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    combos: list[tuple[str, bool, bool]] = [("native", False, False)]
    if args.speed:
        combos = [(b, False, False) for b in args.backends.split(",")]
        combos += [("native", True, False), ("native", False, True)]
    for name, (backend, compile_, fp8) in itertools.product(FULL_SIZE, combos):
        latent = SMOKE_LATENT[name] if args.smoke else FULL_SIZE[name]["latent"]
        try:
            r = transformer_step(args, name, blocks=args.blocks if args.smoke else None, latent=latent,
                                 backend=backend, compile_=compile_, fp8=fp8)
        except Exception as exc:  # e.g. a backend whose kernels are not installed
            r = {"model": name, "setting": f"attn={backend} compile={int(compile_)} fp8-storage={int(fp8)}",
                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        rows.append(r)
        print(f"#  full-size {name} {r['setting']}: {r.get('error') or round(r['step_s'], 3)}", flush=True)
    return rows


# -- main ---------------------------------------------------------------------------------------

def _fmt_stages(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    parts = []
    for k, v in r["stage_s"].items():
        peak = r["stage_peak_gb"].get(k)
        parts.append(f"{k} {v:.2f}s" + (f" ({peak:.1f} GB)" if peak is not None else ""))
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--smoke", action="store_true",
                    help="reduced shapes for a CPU check: full-size dims cut to --blocks blocks at a tiny latent")
    ap.add_argument("--quick", action="store_true", help="one E2E run per audio setting, one timed rep")
    ap.add_argument("--blocks", type=int, default=1, help="with --smoke: transformer blocks to build")
    ap.add_argument("--weights-dir", default=None, help="diffusers-format weights for --profile")
    ap.add_argument("--profile", default=None, choices=["wan2.2-ti2v-5b", "wan2.2-i2v-a14b"])
    ap.add_argument("--lora-dir", default=None, help="4-step distilled LoRAs for wan2.2-i2v-a14b")
    ap.add_argument("--audio-weights-dir", default=None, help="diffusers-format LTX-2 (native audio)")
    ap.add_argument("--e2e-profile", default="tiny", help="profile for E2E/stages without --weights-dir")
    ap.add_argument("--runs", type=int, default=3, help="E2E tasks per audio setting")
    ap.add_argument("--reps", type=int, default=3, help="timed transformer forwards")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--speed", action="store_true", help="compare attention backends, compile and fp8 storage")
    ap.add_argument("--backends", default="native,flash,_native_cudnn,sage",
                    help="attention backends for --speed (diffusers names; 'native' = SDPA default)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: e2e,stages,full")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    args.device = resolve_device(args.device)
    if args.quick:
        args.runs, args.reps = 1, 1
    if args.weights_dir and not args.profile:
        ap.error("--weights-dir needs --profile")
    profile = args.profile if args.weights_dir else args.e2e_profile
    skip = set(filter(None, args.skip.split(",")))
    on_gpu = args.device.startswith("cuda")

    env = c.environment()
    print(c.header("gpu_latency", env, device=args.device, smoke=args.smoke, profile=profile,
                   weights=args.weights_dir or "none (random/tiny)"), flush=True)
    if not on_gpu:
        print("# NOTE: no GPU: every figure below is a CPU figure (reduced shapes with --smoke); "
              "GPU numbers are NOT measured by this run.", flush=True)
    out: dict[str, Any] = {"env": env, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="wanflash-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        if "e2e" not in skip:
            rows = e2e(args, profile, tmp)
            out["e2e"] = rows
            print(c.table(["profile", "audio", "runs", "median submit->URL s", "min s", "output"],
                          [[r["profile"], r["audio"], r["runs"], r["median_s"], r["min_s"], r["video"]]
                           for r in rows]), flush=True)
            if on_gpu and profile in ANCHORS:
                name, anchor = ANCHORS[profile]
                best = min(r["median_s"] for r in rows)
                print(f"# vs anchor {name}: {anchor:.0f} s; ours {best:.1f} s ({best / anchor:.2f}x)")
        if "stages" not in skip:
            rows = speed_grid(args, profile, tmp)
            out["stages"] = rows
            print()
            print(c.table(["profile", "setting", "generate s", "encode s", "total s", "peak GPU GB", "stages"],
                          [[r["profile"], r["setting"], r.get("generate_s", "-"), r.get("encode_s", "-"),
                            r.get("total_s", "-"), r.get("peak_gb") if r.get("peak_gb") is not None else "n/a (CPU)",
                            _fmt_stages(r)] for r in rows]), flush=True)
        if "full" not in skip:
            rows = full_size(args)
            out["full_size"] = rows
            print()
            print(c.table(["model", "setting", "tokens", "layers run", "params B", "dtype", "s/step",
                           "s/step full depth", "DiT s (4 steps)", "peak GPU GB"],
                          [[r["model"], r["setting"], r.get("tokens", "-"), r.get("layers_run", "-"),
                            r.get("params_b", "-"), r.get("dtype", "-"), r.get("step_s", r.get("error")),
                            (f"{r['step_s_full_depth']:.3f}" + (" (extrapolated)" if r["extrapolated"] else ""))
                            if "step_s" in r else "-",
                            r.get("dit_s_4_steps", "-"),
                            r.get("peak_gb") if r.get("peak_gb") is not None else "n/a"] for r in rows]),
                  flush=True)
            if on_gpu and not args.smoke:
                for r in rows:
                    if r.get("model") == "ti2v-5b" and "dit_s_4_steps" in r:
                        print(f"# 5B DiT (4 steps, {r['setting']}): {r['dit_s_4_steps']:.1f} s vs FastVideo's "
                              f"{FASTVIDEO_5B_DIT_S} s (3 steps, FA3+compile, H200)")
    c.finish(env, args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

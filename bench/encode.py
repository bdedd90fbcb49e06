"""Encoding throughput: MP4 / WEBM / MOV at 720p and 1080p, 5 s and 15 s, against generation time.

Three tables:

1. **Formats**: each cell encodes a synthetic moving clip (gradients plus moving noise: harder for
   the encoder than flat colour, closer to generated video) of ``seconds x --fps`` frames with the
   service's own ``encode_video`` at ``--quality`` (default 95, the API default), ``--repeat``
   times; median wall seconds, encode fps, and the CPU seconds the encode used (all encoder
   threads). The last columns put the encode time next to the generation time of the same clip
   on one H200 from the published anchors (``/work/shared/design/engines.md``: 16 s for a 5 s
   720p clip with distilled TI2V-5B, 44 s with 4-step 14B; scaled by clip length; 1080p is
   generated at 720p-class size and upscaled, so the anchor is the same). These are references,
   not measurements of ours.
2. **Tiny, measured** (skip with ``--no-tiny``): the built-in tiny model generates the clip on this
   machine (warm, median of ``--repeat``) and exactly those frames are encoded as MP4: generation
   vs encode of the same clip, both measured here.
3. **Sweep** (``--sweep``): x264 presets and VP9 ``cpu-used`` values x ``outputQuality`` 20/60/95/99
   at 720p x 5 s: encode CPU seconds, wall seconds and size, the data behind the presets chosen in
   ``wanflash.media.encode`` (``X264_OPTIONS``, ``VP9_OPTIONS``).

On a shared machine wall times move with the neighbours' load; CPU seconds hardly do, so compare
those across runs. Wall time on a host with more cores is roughly CPU seconds / cores (both
encoders thread across all cores).

    python bench/encode.py                  # tables 1 and 2
    python bench/encode.py --quick          # 720p x 5 s only, one repeat
    python bench/encode.py --sweep --json encode.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np

from wanflash.formats import OUTPUT_FORMATS
from wanflash.media import encode as enc
from wanflash.media.encode import crf_for, encode_video

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
ANCHOR_5B_PER_5S = 16.0  # s, FastWan2.2-TI2V-5B, 5 s 720p E2E, 1x H200 (engines.md)
ANCHOR_14B_PER_5S = 44.0  # s, LightX2V 4-step 14B 720p 5 s, 1x H200 (engines.md)


def synthetic_clip(frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        phase = t / max(1, frames)
        base = ((x + y + phase) % 1.0) * 200
        out[t] = (np.stack([base, np.roll(base, t * 4, axis=1), base * 0.5], axis=-1)
                  + np.roll(noise, t, axis=0)).clip(0, 255).astype(np.uint8)
    return out


def timed_encode(clip: np.ndarray, path: Path, *, fps: int, fmt: str, quality: int, repeat: int
                 ) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        encode_video(clip, path, fps=fps, fmt=fmt, quality=quality)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = c.median(walls)
    return {"wall_s": wall, "cpu_s": c.median(cpus), "fps": len(clip) / wall, "mb": path.stat().st_size / 1e6}


def formats_table(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for res in args.resolutions.split(","):
        w, h = SIZES[res]
        for secs in (int(s) for s in args.durations.split(",")):
            clip = synthetic_clip(secs * args.fps, w, h)
            for fmt in args.formats.split(","):
                r = timed_encode(clip, tmp / f"clip{OUTPUT_FORMATS[fmt].suffix}", fps=args.fps, fmt=fmt,
                                 quality=args.quality, repeat=args.repeat)
                r.update(format=fmt, res=res, seconds=secs, frames=len(clip), crf=crf_for(fmt, args.quality),
                         gen_5b_s=ANCHOR_5B_PER_5S * secs / 5, gen_14b_s=ANCHOR_14B_PER_5S * secs / 5)
                rows.append(r)
                print(f"#  {fmt} {res} {secs}s: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU", flush=True)
            del clip
    return rows


def tiny_table(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """The tiny model generates each clip here; the same frames are then encoded (MP4)."""
    from wanflash.config import Settings
    from wanflash.contract.validation import parse_video_task, plan_job
    from wanflash.pipelines.profiles import get_profile
    from wanflash.pipelines.registry import create_pipeline

    pipe = create_pipeline(Settings(data_dir=tmp / "data", profile="tiny"))
    pipe.load()
    rows = []
    for res in args.resolutions.split(","):
        for secs in (int(s) for s in args.durations.split(",")):
            task = {"taskType": "videoInference", "taskUUID": "00000000-0000-4000-8000-000000000000",
                    "model": "alibaba:wan@2.6-flash", "positivePrompt": "a red car drives through a city street",
                    "resolution": res, "duration": secs, "seed": 1,
                    "providerSettings": {"alibaba": {"audio": False, "promptExtend": False}}}
            spec = plan_job(parse_video_task(task), profile=get_profile("tiny"))
            pipe.generate(spec)  # warm for this shape
            gens = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                video = pipe.generate(spec).videos[0]
                gens.append(time.perf_counter() - t0)
            r = timed_encode(video, tmp / "tiny.mp4", fps=spec.fps, fmt="MP4", quality=args.quality,
                             repeat=args.repeat)
            r.update(res=res, seconds=secs, frames=spec.num_frames, fps_clip=spec.fps, gen_s=c.median(gens))
            rows.append(r)
            print(f"#  tiny {res} {secs}s: gen {r['gen_s']:.2f} s, encode {r['wall_s']:.2f} s", flush=True)
    return rows


def sweep_table(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    w, h = SIZES["720p"]
    clip = synthetic_clip(5 * args.fps, w, h)
    x264, vp9 = dict(enc.X264_OPTIONS), dict(enc.VP9_OPTIONS)
    rows = []
    settings = [("MP4", "preset", p) for p in ("ultrafast", "superfast", "veryfast", "faster", "medium")]
    settings += [("WEBM", "cpu-used", v) for v in ("8", "6", "4")]
    try:
        for fmt, key, value in settings:
            enc.X264_OPTIONS.update(x264)
            enc.VP9_OPTIONS.update(vp9)
            (enc.X264_OPTIONS if fmt == "MP4" else enc.VP9_OPTIONS)[key] = value
            for q in (20, 60, 95, 99):
                r = timed_encode(clip, tmp / f"sweep{OUTPUT_FORMATS[fmt].suffix}", fps=args.fps, fmt=fmt, quality=q,
                                 repeat=args.repeat)
                r.update(format=fmt, setting=f"{key}={value}", quality=q, crf=crf_for(fmt, q))
                rows.append(r)
            print(f"#  sweep {fmt} {key}={value} done", flush=True)
    finally:
        enc.X264_OPTIONS.clear()
        enc.X264_OPTIONS.update(x264)
        enc.VP9_OPTIONS.clear()
        enc.VP9_OPTIONS.update(vp9)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=int, default=24, help="frames per second of the synthetic clips (TI2V-5B: 24)")
    ap.add_argument("--quality", type=int, default=95, help="outputQuality (API default 95)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--formats", default="MP4,WEBM,MOV")
    ap.add_argument("--durations", default="5,15")
    ap.add_argument("--resolutions", default="720p,1080p")
    ap.add_argument("--no-tiny", action="store_true", help="skip the measured tiny-model generation table")
    ap.add_argument("--sweep", action="store_true", help="also sweep presets x outputQuality at 720p x 5 s")
    ap.add_argument("--quick", action="store_true", help="720p x 5 s, one repeat")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.resolutions, args.durations, args.repeat = "720p", "5", 1

    env = c.environment()
    print(c.header("encode", env, fps=args.fps, quality=args.quality, repeat=args.repeat,
                   x264=enc.X264_OPTIONS, vp9=enc.VP9_OPTIONS), flush=True)
    out: dict[str, Any] = {"env": env, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="wanflash-encode-") as tmp_name:
        tmp = Path(tmp_name)
        rows = formats_table(args, tmp)
        out["formats"] = rows
        print(c.table(
            ["format", "res", "s", "frames", "CRF", "encode s (wall)", "encode fps", "encode CPU s", "MB",
             "5B gen s (H200 anchor)", "encode/gen 5B", "14B gen s (H200 anchor)", "encode/gen 14B"],
            [[r["format"], r["res"], r["seconds"], r["frames"], r["crf"], r["wall_s"], f"{r['fps']:.0f}",
              r["cpu_s"], f"{r['mb']:.1f}", r["gen_5b_s"], f"{r['wall_s'] / r['gen_5b_s']:.3f}", r["gen_14b_s"],
              f"{r['wall_s'] / r['gen_14b_s']:.3f}"] for r in rows]), flush=True)
        if not args.no_tiny:
            tiny = tiny_table(args, tmp)
            out["tiny"] = tiny
            print()
            print(c.table(["res", "s", "frames@fps", "tiny gen s (measured)", "MP4 encode s (measured)",
                           "encode CPU s", "encode/gen"],
                          [[r["res"], r["seconds"], f"{r['frames']}@{r['fps_clip']}", r["gen_s"], r["wall_s"],
                            r["cpu_s"], f"{r['wall_s'] / r['gen_s']:.2f}"] for r in tiny]), flush=True)
        if args.sweep:
            sweep = sweep_table(args, tmp)
            out["sweep"] = sweep
            print()
            print(c.table(["format", "setting", "quality", "CRF", "encode s (wall)", "encode CPU s", "MB"],
                          [[r["format"], r["setting"], r["quality"], r["crf"], r["wall_s"], r["cpu_s"],
                            f"{r['mb']:.2f}"] for r in sweep]))
    c.finish(env, args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

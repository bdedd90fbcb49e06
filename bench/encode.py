"""Encoding throughput: frames per second of MP4 / WEBM / MOV at 720p and 1080p, 5 s and 15 s.

Each cell encodes a synthetic moving clip (noise over a gradient, harder for the encoder than
flat colour and closer to generated video) with the service's own ``encode_video`` at the
requested ``outputQuality``, ``--repeat`` times, and reports the median. The last column puts
the encode time next to a generation time for the same clip, so "encoding is never the
bottleneck" can be checked: ``--gen-seconds`` is the generation time to compare with (default:
the published 16 s anchor for a distilled 5 s 720p TI2V-5B clip on one H200, scaled by clip
length); on CPU pass the tiny model's measured figure instead.

    python bench/encode.py [--fps 24] [--quality 95] [--repeat 3] [--formats MP4,WEBM,MOV]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from wanflash.media.encode import SUFFIXES, crf_for, encode_video
from wanflash.media.probe import probe_file

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--formats", default="MP4,WEBM,MOV")
    ap.add_argument("--durations", default="5,15")
    ap.add_argument("--resolutions", default="720p,1080p")
    ap.add_argument("--gen-seconds-per-5s", type=float, default=16.0,
                    help="generation time of a 5 s clip to compare with (default: 16 s H200 anchor)")
    args = ap.parse_args()

    print(f"# encode benchmark  python {platform.python_version()}  PyAV {av.__version__}  "
          f"FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} (libavcodec)  "
          f"{platform.machine()}  fps={args.fps} quality={args.quality} repeat={args.repeat}")
    print("| format | res | seconds | frames | CRF | median encode s | encode fps | MB | "
          "gen s (ref) | encode/gen |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.resolutions.split(","):
            w, h = SIZES[res]
            for secs in (int(s) for s in args.durations.split(",")):
                n = secs * args.fps
                clip = synthetic_clip(n, w, h)
                for fmt in args.formats.split(","):
                    path = Path(tmp) / f"clip{SUFFIXES[fmt]}"
                    times = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        encode_video(clip, path, fps=args.fps, fmt=fmt, quality=args.quality)
                        times.append(time.perf_counter() - t0)
                    info = probe_file(path, decode=False)
                    med = statistics.median(times)
                    gen = args.gen_seconds_per_5s * secs / 5
                    print(f"| {fmt} | {res} | {secs} | {info.frames or n} | {crf_for(fmt, args.quality)} | "
                          f"{med:.2f} | {n / med:.0f} | {path.stat().st_size / 1e6:.1f} | {gen:.0f} | "
                          f"{med / gen:.2f} |", flush=True)
                del clip


if __name__ == "__main__":
    main()

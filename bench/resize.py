"""The 720p-class -> 1080p resize: cost of each resampling filter next to encoding the same clip.

A 1080p request is generated at the profile's 720p-class size (1280x704 for TI2V-5B, 1280x720 for
A14B) and resized to 1920x1080 by ``wanflash.pipelines.postprocess.fit_video`` (bicubic with
antialiasing since issue #17; bilinear before). For one synthetic clip of ``--seconds x --fps``
frames this times, median of ``--repeat``: torch bilinear (the old filter), torch bicubic with
antialias (``fit_video`` itself), PIL Lanczos frame by frame (the sharpest common filter), and the
service's MP4 encode of the 1080p result at quality 95. Wall and CPU seconds of this process.

    python bench/resize.py            # 5 s at 24 fps (121 frames of 1280x704, the 5B's size)
    python bench/resize.py --quick    # 1 s, one repeat
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
from encode import synthetic_clip


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, p0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - p0)
    return c.median(walls), c.median(cpus), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--src", default="1280x704", help="generation size (A14B: 1280x720)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s, one repeat")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeat = 1.0, 1
    import torch
    from PIL import Image

    from wanflash.media.encode import encode_video
    from wanflash.pipelines.postprocess import cover_box, fit_video

    w, h = map(int, args.src.split("x"))
    frames = int(args.seconds * args.fps)
    clip = synthetic_clip(frames, w, h)
    env = c.environment()
    print(c.header("resize", env, src=args.src, dst="1920x1080", frames=frames, repeat=args.repeat,
                   torch_threads=torch.get_num_threads()), flush=True)

    def torch_filter(mode: str, antialias: bool) -> Any:
        def run() -> np.ndarray:
            out = np.empty((frames, 1080, 1920, 3), np.uint8)
            src = torch.from_numpy(clip)
            scale = max(1920 / w, 1080 / h)
            sw, sh = max(1920, round(w * scale)), max(1080, round(h * scale))
            left, top = (sw - 1920) // 2, (sh - 1080) // 2
            for i in range(0, frames, 16):
                x = src[i:i + 16].permute(0, 3, 1, 2)
                y = torch.nn.functional.interpolate(x, size=(sh, sw), mode=mode, antialias=antialias,
                                                    align_corners=False)
                out[i:i + 16] = y.permute(0, 2, 3, 1)[:, top:top + 1080, left:left + 1920].numpy()
            return out
        return run

    def lanczos() -> np.ndarray:
        box = cover_box(w, h, 1920, 1080)
        return np.stack([np.asarray(Image.fromarray(f).resize((1920, 1080), Image.Resampling.LANCZOS, box=box))
                         for f in clip])

    rows = []
    result = None
    for name, fn in (("torch bilinear (before)", torch_filter("bilinear", False)),
                     ("torch bicubic + antialias (fit_video)", lambda: fit_video(clip, 1920, 1080)),
                     ("PIL Lanczos, per frame", lanczos)):
        wall, cpu, out = timed(fn, args.repeat)
        result = out if "fit_video" in name else result
        rows.append({"what": name, "wall_s": wall, "cpu_s": cpu, "ms_per_frame": wall / frames * 1000})
        print(f"#  {name}: {wall:.2f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu, _ = timed(lambda: encode_video(result, Path(tmp) / "o.mp4", fps=args.fps, fmt="MP4",
                                                  quality=95), args.repeat)
    rows.append({"what": "MP4 encode of the 1080p clip (quality 95)", "wall_s": wall, "cpu_s": cpu,
                 "ms_per_frame": wall / frames * 1000})
    enc = rows[-1]["wall_s"]
    print(c.table(["step", "wall s", "CPU s", "ms / frame", "vs encode (wall)"],
                  [[r["what"], r["wall_s"], r["cpu_s"], f"{r['ms_per_frame']:.1f}", f"{r['wall_s'] / enc:.2f}"]
                   for r in rows]), flush=True)
    c.finish(env, args.json, {"env": env, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

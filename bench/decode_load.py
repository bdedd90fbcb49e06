"""API memory under image-decode load: N parallel ``imageUpload``s of one large grayscale PNG.

The server is a SEPARATE process (``bench/_serve.py --instant``, no torch), so the RSS measured is
the API process's own. The PNG (default 6324 x 6324 = 40 MP, just under the old 40 MP pixel cap;
a smooth pattern, so the file is small and the cost is all in decoding) is sent ``--parallel``
times at once over REST as a base64 data URI (the SDKs' way). RSS is sampled from /proc every
20 ms: idle before the burst, peak during it, and after (``--settle`` seconds after the last
reply). Each reply's code is counted (``imageUUID`` or the error code).

    python bench/decode_load.py                            # 16 x 6324^2, the server's defaults
    python bench/decode_load.py --size 4096                # just under the current default cap
    python bench/decode_load.py --set max_image_pixels=40000000   # the old cap: the full decode
    python bench/decode_load.py --server-src /path/to/other/src   # another revision, same load
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c

API_KEY = "bench-decode-key"
LIMITS = {"rate_limit_per_s": 1_000_000, "rate_limit_burst": 1_000_000}


def grayscale_png(size: int) -> bytes:
    import numpy as np
    from PIL import Image

    x = np.arange(size, dtype=np.uint32)
    pattern = ((x[None, :] // 8 + x[:, None] // 8) % 256).astype(np.uint8)  # compresses well
    buf = io.BytesIO()
    Image.fromarray(pattern, "L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


async def burst(url: str, pid: int, body: str, n: int, settle_s: float) -> dict[str, Any]:
    import httpx

    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), c.rss_mb(pid)))
            await asyncio.sleep(0.02)

    sampling = asyncio.create_task(sampler())
    codes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=600) as http:
        async def one() -> None:
            task = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": body}
            r = await http.post("/v1", json=[task])
            j = r.json()
            codes["imageUUID" if r.status_code == 200 else j["errors"][0]["code"]] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.monotonic() - t0
    t_end = time.monotonic()
    await asyncio.sleep(settle_s)
    stop.set()
    await sampling
    during = [rss for t, rss in samples if t <= t_end]
    return {"wall_s": wall, "rss_peak_mb": max(during), "rss_after_mb": c.rss_mb(pid), "replies": dict(codes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=6324, help="side of the square grayscale PNG, pixels")
    ap.add_argument("--parallel", type=int, default=16, help="imageUploads sent at once")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the burst before 'after' RSS")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a server Settings override, e.g. --set max_image_pixels=40000000")
    ap.add_argument("--server-src", default=None, metavar="DIR",
                    help="run the server from another revision's src/ directory (before/after comparisons)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    env = c.environment(torch_too=False)
    png = grayscale_png(args.size)
    body = "data:image/png;base64," + base64.b64encode(png).decode()
    settings = {"api_keys": API_KEY, "profile": "tiny", "playground": False, **LIMITS}
    print(c.header("decode_load", env, image=f"{args.size}x{args.size} L PNG ({len(png) / 1e6:.1f} MB)",
                   parallel=args.parallel, overrides=" ".join(args.set) or "none"), flush=True)
    with tempfile.TemporaryDirectory(prefix="wanflash-decode-") as tmp:
        port = c.free_port()
        argv = [c.python(), str(c.ROOT / "bench" / "_serve.py"), "--port", str(port), "--data-dir",
                str(Path(tmp) / "data"), "--instant", tmp]
        argv += [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items()]
        argv += [f"--set={s}" for s in args.set]
        with c.server_process(argv, port, Path(tmp) / "server.log", src=args.server_src) as srv:
            time.sleep(1.0)
            idle = c.rss_mb(srv.pid)
            row = asyncio.run(burst(srv.url, srv.pid, body, args.parallel, args.settle))
            row["rss_idle_mb"] = idle
    print(c.table(["image", "parallel", "wall s", "API RSS idle MB", "peak MB", "after MB", "replies",
                   "targets (peak<400, after<200)"],
                  [[f"{args.size}^2", args.parallel, row["wall_s"], row["rss_idle_mb"], row["rss_peak_mb"],
                    row["rss_after_mb"], " ".join(f"{k}:{v}" for k, v in row["replies"].items()),
                    "met" if row["rss_peak_mb"] < 400 and row["rss_after_mb"] < 200 else "NOT met"]]))
    c.finish(env, args.json, {"env": env, "args": vars(args), "run": row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

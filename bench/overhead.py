"""Service overhead: one task end to end through the server vs the same work done directly.

*Service*: ``wanflash serve`` in a subprocess (the shipped command: subprocess executor, SQLite
store, local storage), tiny profile. One pair is timed from the REST ``POST /v1`` of a
``videoInference`` task (the input image inline as a JPEG data URI) until the ``videoURL`` named
by a ``getResponse`` poll is fully downloaded.

*Direct*: in this process, the same pipeline object the executor child builds
(``wanflash.pipelines.registry.create_pipeline`` on the same data dir, i.e. the same tiny
weights) is called with the same planned ``JobSpec`` (same size, frames, seed, prompt) and the
same decoded image, and its frames are encoded with ``wanflash.media.encode.encode_video`` at the
same format and quality: the diffusers call plus the PyAV encode, nothing else.

Both sides are warm (the server's executor has loaded the model and run one task; the direct
pipeline has run once) and runs alternate in the same process run, the order flipping every
pair, so drift from other load on the machine hits both sides alike. The median of the
per-pair ratios service/direct is the figure (target <= 1.10 at 720p x 5 s). At the end the two
outputs of the last pair are compared (same bytes, or the largest decoded pixel difference) to
show the work was the same.

    python bench/overhead.py              # 9 pairs, 720p x 5 s, tiny
    python bench/overhead.py --quick      # 3 pairs
    python bench/overhead.py --pairs 15 --poll-interval 0.05 --json overhead.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common as c
import numpy as np

API_KEY = "bench-overhead-key"
MODEL = "alibaba:wan@2.6-flash"


def input_jpeg(width: int, height: int) -> bytes:
    """A photo-like input frame (smooth gradients plus mild texture), JPEG as clients send it."""
    from PIL import Image

    rng = np.random.default_rng(7)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.stack([200 * x + 30 * y, 180 * y + 40 * x, 120 + 80 * x * y], axis=-1)
    img = (img + rng.normal(0, 6, size=img.shape)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="JPEG", quality=90)
    return out.getvalue()


def wire_task(args: argparse.Namespace, jpeg: bytes) -> dict[str, Any]:
    return {
        "taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL,
        "positivePrompt": "a red car drives through a city street at night, cinematic",
        "resolution": args.resolution, "duration": args.duration, "seed": args.seed,
        "outputFormat": args.format, "outputQuality": args.quality, "numberResults": 1,
        "inputs": {"frameImages": [{"image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(),
                                    "frame": "first"}]},
        "providerSettings": {"alibaba": {"audio": False, "promptExtend": False}},
    }


class Direct:
    """The pipeline call + encode, in this process, on the same weights as the server."""

    def __init__(self, data_dir: Path, jpeg: bytes, task: dict[str, Any]) -> None:
        from PIL import Image

        from wanflash.config import Settings
        from wanflash.contract.validation import ResolvedInputs, parse_video_task, plan_job
        from wanflash.pipelines.profiles import get_profile
        from wanflash.pipelines.registry import create_pipeline

        self.settings = Settings(data_dir=data_dir, profile="tiny")
        self.jpeg = jpeg
        size = Image.open(io.BytesIO(jpeg)).size
        # The same planning the API does (size, frames, fps, seed); the key is only a label here.
        self.spec = plan_job(parse_video_task(task), profile=get_profile("tiny"),
                             inputs=ResolvedInputs(image_key="direct", image_size=size))
        self.pipe = create_pipeline(self.settings)
        self.pipe.load()

    def run(self, out: Path) -> float:
        from PIL import Image

        from wanflash.media.encode import encode_video

        t0 = time.perf_counter()
        image = Image.open(io.BytesIO(self.jpeg)).convert("RGB")
        result = self.pipe.generate(self.spec, image=image)
        encode_video(result.videos[0], out, fps=self.spec.fps, fmt=self.spec.output_format,
                     quality=self.spec.output_quality, audio=None)
        return time.perf_counter() - t0


def run_service(client: Any, url: str, task: dict[str, Any], poll: float, out: Path) -> tuple[float, dict[str, float]]:
    """Submit, poll until success, download. Returns (seconds, stage marks relative to submit)."""
    t0 = time.perf_counter()
    r = client.post(url + "/v1", json=[task])
    r.raise_for_status()
    acked = time.perf_counter()
    tu = task["taskUUID"]
    polls = 0
    while True:
        resp = client.post(url + "/v1", json=[{"taskType": "getResponse", "taskUUID": tu}])
        polls += 1
        body = resp.json()
        if body.get("errors"):
            raise RuntimeError(f"task failed: {body['errors']}")
        item = body["data"][0]
        if item.get("status") == "success":
            break
        time.sleep(poll)
    done = time.perf_counter()
    data = client.get(item["videoURL"]).raise_for_status().content
    out.write_bytes(data)
    end = time.perf_counter()
    return end - t0, {"ack": acked - t0, "success_seen": done - t0, "download": end - done, "polls": polls}


def compare(a: Path, b: Path) -> str:
    """Same bytes, or the largest decoded pixel difference between the two videos."""
    if hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest():
        return "identical bytes"
    import av

    def frames(p: Path) -> np.ndarray:
        with av.open(str(p)) as cont:
            return np.stack([f.to_ndarray(format="rgb24") for f in cont.decode(video=0)])

    fa, fb = frames(a), frames(b)
    if fa.shape != fb.shape:
        return f"DIFFERENT shapes {fa.shape} vs {fb.shape}"
    return f"bytes differ; decoded max |diff| = {int(np.abs(fa.astype(int) - fb.astype(int)).max())}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=9, help="timed service/direct pairs (>= 7 for the figure)")
    ap.add_argument("--quick", action="store_true", help="3 pairs, for a smoke run")
    ap.add_argument("--resolution", default="720p", choices=["720p", "1080p"])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--format", default="MP4", choices=["MP4", "WEBM", "MOV"])
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--poll-interval", type=float, default=0.05,
                    help="client's getResponse interval in seconds (what a tight client does)")
    ap.add_argument("--executor", default="subprocess", choices=["subprocess", "inprocess"])
    ap.add_argument("--data-dir", default=None, help="keep the data dir (tiny model, outputs) here")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    pairs = 3 if args.quick else args.pairs

    import httpx

    env = c.environment()
    print(c.header("overhead", env, profile="tiny", size=f"{args.resolution}x{args.duration}s",
                   fmt=args.format, quality=args.quality, pairs=pairs, poll_s=args.poll_interval,
                   executor=args.executor), flush=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="wanflash-bench-")
    data_dir = Path(args.data_dir) if args.data_dir else Path(tmp_ctx.name) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tmp_ctx.name)

    jpeg = input_jpeg(1280, 720) if args.resolution == "720p" else input_jpeg(1920, 1080)
    template = wire_task(args, jpeg)
    t = time.perf_counter()
    direct = Direct(data_dir, jpeg, template)  # builds the tiny model on first use, before the server starts
    print(f"# direct pipeline loaded in {time.perf_counter() - t:.1f} s; spec {direct.spec.width}x"
          f"{direct.spec.height}, {direct.spec.num_frames} frames at {direct.spec.fps} fps", flush=True)

    port = c.free_port()
    argv = [c.python(), "-m", "wanflash.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--profile", "tiny", "--executor", args.executor]
    senv = {"WANFLASH_API_KEYS": API_KEY, "WANFLASH_PLAYGROUND": "0"}
    rows: list[dict[str, Any]] = []
    with c.server_process(argv, port, work / "server.log", env=senv) as srv, \
            httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
        # Warm both sides: the executor child's first job and the direct pipeline's first call
        # pay one-off costs (allocator, kernels, x264 init) that neither side pays again.
        run_service(client, srv.url, {**template, "taskUUID": str(uuid.uuid4())}, args.poll_interval,
                    work / "warm.mp4")
        direct.run(work / "warm-direct.mp4")
        for i in range(pairs):
            order = ("service", "direct") if i % 2 == 0 else ("direct", "service")
            row: dict[str, Any] = {"pair": i + 1, "first": order[0]}
            for side in order:
                if side == "service":
                    secs, marks = run_service(client, srv.url, {**template, "taskUUID": str(uuid.uuid4())},
                                              args.poll_interval, work / "service.mp4")
                    row["service"], row["marks"] = secs, marks
                else:
                    row["direct"] = direct.run(work / "direct.mp4")
            row["ratio"] = row["service"] / row["direct"]
            rows.append(row)
            m = row["marks"]
            print(f"#  pair {i + 1}: service {row['service']:.2f} s (ack {m['ack'] * 1000:.0f} ms, "
                  f"success seen {m['success_seen']:.2f} s, download {m['download'] * 1000:.0f} ms, "
                  f"{m['polls']} polls)  direct {row['direct']:.2f} s  ratio {row['ratio']:.3f}", flush=True)
        same = compare(work / "service.mp4", work / "direct.mp4")
    env["load_after"] = c.loadavg()

    ratios = [r["ratio"] for r in rows]
    svc = [r["service"] for r in rows]
    dirs = [r["direct"] for r in rows]
    med = c.median(ratios)
    summary = {
        "pairs": pairs, "median_service_s": c.median(svc), "median_direct_s": c.median(dirs),
        "median_ratio": med, "min_ratio": min(ratios), "max_ratio": max(ratios),
        "median_overhead_s": c.median([s - d for s, d in zip(svc, dirs)]),
        "median_ack_ms": c.median([r["marks"]["ack"] * 1000 for r in rows]),
        "median_download_ms": c.median([r["marks"]["download"] * 1000 for r in rows]),
        "target": 1.10, "meets_target": med <= 1.10, "same_output": same,
    }
    print(c.table(["pair", "first", "service s", "direct s", "ratio"],
                  [[r["pair"], r["first"], r["service"], r["direct"], r["ratio"]] for r in rows]))
    print()
    print(c.table(["size", "pairs", "median service s", "median direct s", "median overhead s",
                   "median ratio", "min..max ratio", "target", "met"],
                  [[f"{args.resolution} x {args.duration}s {args.format}", pairs, summary["median_service_s"],
                    summary["median_direct_s"], summary["median_overhead_s"], f"{med:.3f}",
                    f"{min(ratios):.3f}..{max(ratios):.3f}", "<= 1.10", "yes" if med <= 1.10 else "NO"]]))
    print(f"# outputs of the last pair: {same}")
    c.finish(env, args.json, {"env": env, "args": vars(args), "summary": summary, "pairs": rows})
    tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

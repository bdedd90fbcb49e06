"""API load: N concurrent WebSocket clients authenticate, submit and poll, on loopback.

The server is a SEPARATE process (``bench/_serve.py --instant``: the real app under uvicorn,
the embedded supervisor, and an executor whose jobs complete at once with a pre-encoded clip),
so the RSS measured is the API process's own, and the script checks that torch was never
imported there (``/proc/<pid>/maps`` has no libtorch, and the process reports
``'torch' in sys.modules`` on shutdown).

Each client opens one WebSocket, authenticates, then ``--tasks`` times: sends a
``videoInference`` (text-to-video, 720p, 2 s, MP4: no input to fetch, so the ack measures the
API: validation, planning, the durable SQLite insert) and waits for its ack, then polls with
``getResponse`` every ``--poll-interval`` seconds until the task reports success. All clients
start together (a connect storm), and the figures cover the whole run:

* acks/s and polls/s: completed requests over the wall time of the run;
* ack latency p50/p99: from sending the ``videoInference`` frame to receiving its ack;
* errors: error frames, timeouts, closed connections (by code);
* API RSS: peak and final, sampled from /proc every 0.1 s;
* API CPU ms per request: the server process's CPU time over the run / (acks + polls). On a
  shared machine latencies move with the neighbours' load; this figure hardly does, so it is
  the one to compare revisions with (``--server-src``).

Server configuration for the benchmark (stated in the output): one API key shared by every
client, so the per-key limits are raised explicitly (``rate_limit_per_s``,
``rate_limit_burst``, ``max_in_flight_per_key`` = 1e6); with the defaults (20/s, burst 40,
16 in flight) a shared key would be refused after its first 16 tasks, by design.

The clients run in this process (asyncio + ``websockets``) on the same 2-core machine, so they
compete with the server for CPU: the figures are a lower bound for a server with its own cores.

    python bench/api_load.py                      # 100 and 500 clients, 5 tasks each
    python bench/api_load.py --quick              # 100 clients, 2 tasks each
    python bench/api_load.py --clients 100,500 --tasks 5 --poll-interval 0.2 --json load.json
    python bench/api_load.py --clients 100 --timers   # + where the server's time went, per layer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
from _timers import LAG_TICK_S

API_KEY = "bench-load-key"
LIMITS = {"rate_limit_per_s": 1_000_000, "rate_limit_burst": 1_000_000, "max_in_flight_per_key": 1_000_000}


@dataclass
class Stats:
    ack_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    auth_ms: list[float] = field(default_factory=list)
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def video_task(resolution: str, duration: int) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
            "positivePrompt": "a red car drives through a city street at night", "resolution": resolution,
            "duration": duration, "numberResults": 1, "outputFormat": "MP4",
            "providerSettings": {"alibaba": {"audio": False, "promptExtend": False}}}


async def client(url: str, args: argparse.Namespace, stats: Stats, start: asyncio.Event) -> None:
    import websockets

    await start.wait()
    try:
        async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=60,
                                      close_timeout=5) as ws:
            t = time.perf_counter()
            await ws.send(json.dumps([{"taskType": "authentication", "apiKey": API_KEY}]))
            reply = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
            stats.auth_ms.append((time.perf_counter() - t) * 1000)
            if "errors" in reply:
                stats.errors["auth:" + reply["errors"][0].get("code", "?")] += 1
                return
            for _ in range(args.tasks):
                task = video_task(args.resolution, args.duration)
                t = time.perf_counter()
                await ws.send(json.dumps([task]))
                reply = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
                if "errors" in reply:
                    stats.errors["submit:" + reply["errors"][0].get("code", "?")] += 1
                    continue
                stats.ack_ms.append((time.perf_counter() - t) * 1000)
                deadline = time.monotonic() + args.timeout
                while True:
                    await asyncio.sleep(args.poll_interval)
                    t = time.perf_counter()
                    await ws.send(json.dumps([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]))
                    reply = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
                    stats.poll_ms.append((time.perf_counter() - t) * 1000)
                    if "errors" in reply:
                        stats.errors["poll:" + reply["errors"][0].get("code", "?")] += 1
                        break
                    if reply["data"][0].get("status") == "success":
                        stats.completed += 1
                        break
                    if time.monotonic() > deadline:
                        stats.errors["poll:timeout"] += 1
                        break
    except TimeoutError:
        stats.errors["timeout"] += 1
    except Exception as exc:  # a failed connect or a dropped connection is an error of the run, not of this script
        stats.errors[type(exc).__name__] += 1


async def rss_sampler(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(c.rss_mb(pid))
        except OSError:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


async def run_load(url: str, pid: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    start = asyncio.Event()
    stop = asyncio.Event()
    rss: list[float] = []
    sampler = asyncio.create_task(rss_sampler(pid, rss, stop))
    tasks = [asyncio.create_task(client(url, args, stats, start)) for _ in range(n)]
    await asyncio.sleep(0.1)
    cpu0 = c.cpu_seconds(pid)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    cpu = c.cpu_seconds(pid) - cpu0
    stop.set()
    await sampler
    return {
        "clients": n, "tasks_per_client": args.tasks, "wall_s": wall,
        "acks": len(stats.ack_ms), "acks_per_s": len(stats.ack_ms) / wall,
        "polls": len(stats.poll_ms), "polls_per_s": len(stats.poll_ms) / wall,
        "completed": stats.completed,
        # CPU the API process spent per request (acks + polls + auths, and completing the tasks):
        # unlike latencies, this hardly moves when other work shares the machine.
        "api_cpu_s": cpu, "api_cpu_ms_per_req": 1000 * cpu / max(1, len(stats.ack_ms) + len(stats.poll_ms)),
        "ack_p50_ms": c.percentile(stats.ack_ms, 50), "ack_p99_ms": c.percentile(stats.ack_ms, 99),
        "ack_max_ms": max(stats.ack_ms, default=float("nan")),
        "poll_p50_ms": c.percentile(stats.poll_ms, 50), "poll_p99_ms": c.percentile(stats.poll_ms, 99),
        "auth_p99_ms": c.percentile(stats.auth_ms, 99),
        "errors": sum(stats.errors.values()), "error_kinds": dict(stats.errors),
        "rss_peak_mb": max(rss, default=float("nan")), "rss_end_mb": c.rss_mb(pid),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="100,500", help="comma-separated client counts, one run each")
    ap.add_argument("--tasks", type=int, default=5, help="videoInference tasks per client")
    ap.add_argument("--poll-interval", type=float, default=0.2, help="seconds between a client's polls")
    ap.add_argument("--resolution", default="720p", choices=["720p", "1080p"])
    ap.add_argument("--duration", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="per-reply timeout, seconds")
    ap.add_argument("--quick", action="store_true", help="100 clients, 2 tasks each")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--server-src", default=None, metavar="DIR",
                    help="run the server from another revision's src/ directory (before/after comparisons)")
    ap.add_argument("--py-spy", default=None, metavar="PREFIX",
                    help="profile the API process with py-spy (pip install -e '.[bench]') during each run; "
                         "writes PREFIX-<clients>.txt (collapsed stacks, for flamegraph.pl/speedscope)")
    ap.add_argument("--timers", action="store_true",
                    help="also print where the server's time went: per-layer call times, event-loop lag, "
                         "modules imported under load (bench/_timers.py; adds microseconds per call)")
    args = ap.parse_args()
    counts = [100] if args.quick else [int(x) for x in args.clients.split(",")]
    if args.quick:
        args.tasks = 2

    env = c.environment(torch_too=False)
    settings = {"api_keys": API_KEY, "profile": "tiny", "playground": False, **LIMITS}
    print(c.header("api_load", env, tasks=args.tasks, poll_s=args.poll_interval,
                   task=f"T2V {args.resolution} {args.duration}s MP4", worker="instant (bench/_serve.py)",
                   server=" ".join(f"{k}={v}" for k, v in settings.items() if k != "api_keys")), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wanflash-load-") as tmp:
        from _serve import make_clip

        from wanflash.contract.validation import SIZES
        from wanflash.pipelines.profiles import get_profile

        fps = get_profile("tiny").fps
        w, h = SIZES[args.resolution][0]  # text-to-video gets the 16:9 size
        make_clip(Path(tmp), w, h, args.duration * fps, fps, "MP4")
        for n in counts:
            port = c.free_port()
            report = Path(tmp) / f"report-{n}.json"
            argv = [c.python(), str(c.ROOT / "bench" / "_serve.py"), "--port", str(port),
                    "--data-dir", str(Path(tmp) / f"data-{n}"), "--instant", tmp, "--report", str(report)]
            timers = Path(tmp) / f"timers-{n}.json"
            if args.timers:
                argv += ["--timers", str(timers)]
            argv += [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items()]
            with c.server_process(argv, port, Path(tmp) / f"server-{n}.log", src=args.server_src) as srv:
                rss_idle = c.rss_mb(srv.pid)
                spy = c.py_spy(srv.pid, f"{args.py_spy}-{n}.txt") if args.py_spy else None
                row = asyncio.run(run_load(f"ws://127.0.0.1:{port}/v1", srv.pid, n, args))
                if spy is not None:
                    c.stop_py_spy(spy)
                row["rss_idle_mb"] = rss_idle
                row["libtorch_mapped"] = c.maps_libtorch(srv.pid)
            row.update(json.loads(report.read_text()) if report.exists() else {"torch_imported": None})
            row["load_after"] = c.loadavg()
            if args.timers and timers.exists():
                row["timers"] = _timer_rows(json.loads(timers.read_text()))
            rows.append(row)
            print(f"#  {n} clients: {json.dumps({k: row[k] for k in ('wall_s', 'acks', 'completed', 'errors')})}"
                  f"  errors={row['error_kinds']}  load {row['load_after']}", flush=True)

    print(c.table(
        ["clients", "acks/s", "polls/s", "ack p50 ms", "ack p99 ms", "poll p99 ms", "API CPU ms/req", "errors",
         "done/acked",
         "API RSS idle/peak MB", "torch in API", "targets (p99<50ms@100, 0 err, RSS<200MB)"],
        [[r["clients"], r["acks_per_s"], r["polls_per_s"], r["ack_p50_ms"], r["ack_p99_ms"], r["poll_p99_ms"],
          r["api_cpu_ms_per_req"], r["errors"], f"{r['completed']}/{r['acks']}",
          f"{r['rss_idle_mb']:.0f}/{r['rss_peak_mb']:.0f}",
          _torch(r),
          _verdict(r)] for r in rows]))
    for r in rows:
        if "timers" in r:
            t = r["timers"]
            print(f"\n# {r['clients']} clients: where the server's time went (wall ms per call; loop lag = how "
                  f"late a {1000 * LAG_TICK_S:.0f} ms sleep woke)")
            print(c.table(["layer", "calls", "p50 ms", "p99 ms", "max ms"], t["layers"]))
            print(f"# late imports (after the first client connected): {', '.join(t['late_imports']) or 'none'}")
    c.finish(env, args.json, {"env": env, "args": vars(args), "server_settings": settings, "runs": rows})
    return 0


def _timer_rows(t: dict[str, Any]) -> dict[str, Any]:
    layers = [[name, len(v), c.percentile(v, 50), c.percentile(v, 99), max(v)] for name, v in t["calls_ms"].items()]
    lag = t["loop_lag_ms"]
    layers.append(["event-loop lag", len(lag), c.percentile(lag, 50), c.percentile(lag, 99), max(lag, default=0.0)])
    # A package imported late is shown once, with a count: PyAV alone is ~60 submodules.
    names = t["late_imports"]
    roots = {m for m in names if "." not in m}
    late = [f"{r} (+{sum(m.startswith(r + '.') for m in names)} submodules)" for r in sorted(roots)]
    late += [m for m in names if m.split(".")[0] not in roots]
    return {"layers": layers, "late_imports": late}


def _torch(r: dict[str, Any]) -> str:
    if r["torch_imported"] or r["libtorch_mapped"]:
        return "YES"
    return "no" if r["torch_imported"] is False else "no libtorch mapped; sys.modules not reported"


def _verdict(r: dict[str, Any]) -> str:
    misses = []
    if r["clients"] <= 100 and not r["ack_p99_ms"] < 50:
        misses.append("p99")
    if r["errors"]:
        misses.append("errors")
    if not r["rss_peak_mb"] < 200:
        misses.append("RSS")
    if _torch(r) != "no":
        misses.append("torch")
    return "met" if not misses else "MISSED " + ",".join(misses)


if __name__ == "__main__":
    sys.exit(main())

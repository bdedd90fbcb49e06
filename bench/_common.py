"""Shared by the scripts in ``bench/``: environment facts, a server subprocess, tables and stats.

Not part of the package and not imported by it. Every script prints a Markdown table (pasteable
into ``bench/RESULTS.md``) headed by one line of environment facts, and can write the same
figures as JSON with ``--json PATH``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them (noise indicator)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions(*, torch_too: bool = True) -> dict[str, str]:
    """Versions of what the figures depend on. ``torch_too=False`` keeps torch out of this process."""
    import av

    out = {"python": platform.python_version(), "av": av.__version__,
           "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}
    if torch_too:
        try:
            import diffusers
            import torch

            out["torch"] = torch.__version__
            out["diffusers"] = diffusers.__version__
            if torch.cuda.is_available():
                out["gpu"] = torch.cuda.get_device_name(0)
                out["cuda"] = str(torch.version.cuda)
        except ImportError:
            pass
    out["wanflash"] = git_commit()
    return out


def environment(*, torch_too: bool = True) -> dict[str, Any]:
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "load_before": loadavg(),
        **versions(torch_too=torch_too),
    }


def header(name: str, env: dict[str, Any], **params: Any) -> str:
    facts = "  ".join(f"{k}={v}" for k, v in env.items())
    extra = "  ".join(f"{k}={v}" for k, v in params.items())
    return f"# {name}  {facts}" + (f"\n# {extra}" if extra else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def finish(env: dict[str, Any], path: str | None, payload: dict[str, Any]) -> None:
    """The closing lines every script prints: the load averages around the run (``env`` gets
    ``load_after`` unless the script took it already), then the ``--json`` file if asked for."""
    env.setdefault("load_after", loadavg())
    print(f"# load average before: {env['load_before']}  after: {env['load_after']}")
    write_json(path, payload)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"# wrote {path}")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (from /proc; Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def maps_libtorch(pid: int) -> bool:
    """True when ``pid`` has libtorch mapped (i.e. torch was imported there)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def server_process(argv: Sequence[str], port: int, log: Path, *, env: dict[str, str] | None = None,
                   ready_timeout: float = 180.0, want_executor_ready: bool = True,
                   src: str | Path | None = None) -> Iterator[Server]:
    """Run ``argv`` (a server listening on ``port``) until the block ends; wait for ``/health``
    (and, with ``want_executor_ready``, for the executor to report ``ready``: warm model).
    ``src``: import ``wanflash`` from this ``src`` directory instead of this checkout's (to
    measure another revision, e.g. before/after a fix, with the same benchmark)."""
    import httpx

    full_env = {**os.environ, **(env or {})}
    # The bench is run from a checkout: make sure the server imports that checkout's package.
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src or ROOT / "src"), str(ROOT / "bench"),
                                                         full_env.get("PYTHONPATH", "")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
            try:
                h = httpx.get(url + "/health", timeout=2).json()
                if not want_executor_ready or h["executor"]["state"] == "ready":
                    break
                if h["executor"]["state"] == "failed":
                    raise RuntimeError(f"executor failed to load; see {log}")
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout:.0f} s; see {log}")
            time.sleep(0.2)
        yield Server(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` (raw collapsed stacks, idle frames included) on ``pid``."""
    exe = Path(sys.executable).with_name("py-spy")
    cmd = [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid), "--format", "raw", "--idle",
           "--rate", "200", "--output", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    """py-spy writes its output when interrupted."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def python() -> str:
    return sys.executable

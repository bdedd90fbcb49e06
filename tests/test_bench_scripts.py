"""The benchmark scripts under bench/ import and parse their options (no benchmark is run here:
figures come from running the scripts themselves, see bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ["overhead.py", "api_load.py", "encode.py", "gpu_latency.py", "_serve.py", "decode_load.py"]


def test_every_bench_script_answers_help() -> None:
    procs = {name: subprocess.Popen([sys.executable, str(BENCH / name), "--help"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=BENCH.parent) for name in SCRIPTS}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name}: {err}"
        assert out.startswith("usage:") and f"bench/{name}" in out, name  # the one documented command

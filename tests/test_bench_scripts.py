"""The benchmark scripts under bench/ import and parse their options (no benchmark is run here:
figures come from running the scripts themselves, see bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ["overhead.py", "api_load.py", "encode.py", "gpu_latency.py", "resize.py", "_serve.py", "decode_load.py",
           "audio.py"]


def test_every_bench_script_answers_help() -> None:
    procs = {name: subprocess.Popen([sys.executable, str(BENCH / name), "--help"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=BENCH.parent) for name in SCRIPTS}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name}: {err}"
        assert out.startswith("usage:") and f"bench/{name}" in out, name  # the one documented command


def test_gpu_acceptance_script_smoke(tmp_path: Path) -> None:
    """The GPU acceptance run's own code path on a CPU: a toy TI2V-5B layout adopted by the service's
    engine under group offloading, every stage timed, JSON written (the GPU run differs only in sizes)."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_latency.py"), "--device", "cpu", "--smoke",
                           "--profiles", "wan2.2-ti2v-5b", "--plans", "group_offload", "--steps", "1",
                           "--json", str(out)], capture_output=True, text=True, cwd=BENCH.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = json.loads(out.read_text())["stages"]
    assert "error" not in row, row
    assert row["plan"] == "group_offload" and row["steps"] == 1
    assert {"text encode", "VAE encode", "denoise", "VAE decode", "PyAV encode"} <= set(row["stage_s"])
    assert "| wan2.2-ti2v-5b | group_offload |" in proc.stdout

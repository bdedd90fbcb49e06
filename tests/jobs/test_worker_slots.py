"""``wanflash worker --gpus 3,5``: one slot process per GPU, each with CUDA_VISIBLE_DEVICES set to its
GPU; a slot that dies is restarted; SIGTERM stops everything. (No GPU needed: the pipeline only
records what its process was given.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.jobs.pgserver import PgServer
from wanflash.config import Settings
from wanflash.worker.distributed import for_slot, parse_gpus

ROOT = Path(__file__).resolve().parents[2]


def test_parse_gpus() -> None:
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus("0-3") == ["0", "1", "2", "3"]
    assert parse_gpus("") == parse_gpus("cpu") == ["cpu"]
    for bad in ("0,0", "a", "3-1"):
        try:
            parse_gpus(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def slots(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in d.glob("*")} if d.exists() else {}


def test_each_slot_gets_its_own_metrics_port() -> None:
    base = Settings(worker_metrics_port=9400)
    assert [for_slot(base, i).observability.worker_metrics_port for i in range(3)] == [9400, 9401, 9402]
    assert for_slot(Settings(), 2).observability.worker_metrics_port is None  # unset: no metrics server anywhere


def test_one_slot_per_gpu_with_its_device_and_restart(pg_server: PgServer, tmp_path: Path) -> None:
    env = {**os.environ, "WANFLASH_DATABASE_URL": pg_server.create_database(), "WANFLASH_DATA_DIR": str(tmp_path),
           "WANFLASH_EXECUTOR": "inprocess", "WANFLASH_LOG_JSON": "1"}
    assert subprocess.run([sys.executable, "-m", "wanflash.cli", "migrate"], cwd=ROOT, env=env,
                          capture_output=True).returncode == 0
    log = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "wanflash.cli", "worker", "--gpus", "3,5", "--pipeline-factory",
                             "tests.worker.fixture_pipelines:slot_probe"], cwd=ROOT, env=env, stderr=log)
    d = tmp_path / "slots"
    try:
        deadline = time.monotonic() + 30
        while len(slots(d)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, slots(d)
            time.sleep(0.1)
        first = slots(d)
        assert sorted(first.values()) == ["3|auto", "5|auto"]
        victim = next(pid for pid, v in first.items() if v.startswith("5|"))
        os.kill(int(victim), signal.SIGKILL)
        while len(slots(d)) < 3:  # the parent starts a new slot for GPU 5
            assert time.monotonic() < deadline + 15, slots(d)
            time.sleep(0.1)
        assert sorted(v for pid, v in slots(d).items() if pid not in first) == ["5|auto"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    # WANFLASH_LOG_JSON holds in the parent and in every slot: one JSON object per line, labelled.
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert any(r["process"] == "worker" and "worker slot 5" in r["message"] and "restarting" in r["message"]
               for r in records), records
    assert {"slot 3", "slot 5"} <= {r["process"] for r in records}, records

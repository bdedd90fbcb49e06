"""``wanflash worker``: GPU worker processes that claim tasks from PostgreSQL.

The command is a small parent that owns no GPU. For each slot (one GPU of ``--gpus``, or one
``cpu`` slot) it starts a child process with ``CUDA_VISIBLE_DEVICES`` set to that GPU (empty for
``cpu``), so every child sees exactly one device as ``cuda:0``. A child runs the same
:class:`~wanflash.worker.supervisor.Supervisor` as ``wanflash serve`` over a
:class:`~wanflash.jobs.postgres.PostgresJobSource`: claim, heartbeat, run on the executor,
store outputs, complete (webhook outbox rows are rendered here, delivered by ``wanflash api``).

* A child that dies is restarted by the one process supervisor (:mod:`wanflash.worker.processes`:
  after 2 s, doubling to 30 s while it keeps dying); the task it held is recovered by the other
  workers (procrastinate's stalled-job retry, or the task's lease) and re-run.
* SIGTERM/SIGINT on the parent stop the children gracefully: each stops its supervisor and
  closes its job source, which voids its leases so another worker re-queues those tasks at once.
* A child whose parent disappears (killed with SIGKILL) stops itself the same way
  (:func:`~wanflash.worker.bootstrap.watch_parent`).
* Every process logs through :func:`~wanflash.worker.bootstrap.bootstrap_process`, so
  ``WANFLASH_LOG_JSON`` holds in the parent and the slots alike.
* The settings reach the children whole, as JSON on stdin (never in argv, which ``ps`` shows).
* What a slot runs (job source, media store, outbox renderer, executor, supervisor, metrics) is built by the
  composition root, :func:`wanflash.compose.build_worker`; this module only manages the processes.

``--group-size k > 1`` hands over to :func:`wanflash.worker.group.run_group` (multi-GPU worker
groups, one job on k GPUs), which lives in its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from wanflash.worker.bootstrap import bootstrap_process, watch_parent
from wanflash.worker.processes import PopenProc, ProcessSet, RestartPolicy, supervise

if TYPE_CHECKING:
    from wanflash.config import Settings

log = logging.getLogger("wanflash.worker")

SLOT_RESTARTS = RestartPolicy(base=2.0, cap=30.0)
SLOT_STOP_GRACE_S = 60.0  # a slot finishing its job on SIGTERM gets this long before SIGKILL


def parse_gpus(spec: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; empty or ``cpu`` -> ``["cpu"]`` (one CPU slot). Ranges: ``"0-3"``."""
    if not spec or spec.strip().lower() == "cpu":
        return ["cpu"]
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise ValueError(f"--gpus: bad range {part!r}")
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part.isdigit():
            out.append(part)
        else:
            raise ValueError(f"--gpus: {part!r} is not a GPU index (use e.g. 0,1 or 0-3 or cpu)")
    if len(set(out)) != len(out):
        raise ValueError("--gpus lists a GPU twice")
    return out or ["cpu"]


def run_worker(settings: Settings, *, gpus: list[str], group_size: int = 1,
               pipeline_factory: str | None = None) -> int:
    """Run worker slots until SIGTERM/SIGINT; returns the exit status."""
    bootstrap_process(settings, label="worker")
    if not settings.jobs.database_url:
        print("wanflash worker needs WANFLASH_DATABASE_URL (PostgreSQL); `wanflash serve` runs the embedded "
              "all-in-one mode instead.", file=sys.stderr)
        return 2
    if group_size < 1:
        print("--group-size must be at least 1", file=sys.stderr)
        return 2
    if group_size > 1:
        from wanflash.worker.group import run_group

        run_group(settings, gpus=gpus, group_size=group_size)  # until SIGTERM/SIGINT
        return 0
    return _Parent(settings, gpus, pipeline_factory).run()


class _Parent:
    """One :class:`ProcessSet` of one slot process per GPU, supervised until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, gpus: list[str], pipeline_factory: str | None) -> None:
        self.settings = settings
        self.gpus = gpus
        self.pipeline_factory = pipeline_factory
        self.stop = threading.Event()

    def _spawn(self, gpu: str) -> list[PopenProc]:
        from wanflash.config import child_environment

        settings = for_slot(self.settings, self.gpus.index(gpu))
        if gpu == "cpu" and settings.engine.device == "auto":
            settings = settings.replace(device="cpu")
        cmd = [sys.executable, "-m", "wanflash.worker.distributed", "--slot", gpu, "--parent", str(os.getpid())]
        if self.pipeline_factory:
            cmd += ["--pipeline-factory", self.pipeline_factory]
        env = child_environment(CUDA_VISIBLE_DEVICES="" if gpu == "cpu" else gpu)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
        assert proc.stdin is not None  # stdin=PIPE
        proc.stdin.write(settings.model_dump_json().encode())
        proc.stdin.close()
        log.info("worker slot %s: pid %d", gpu, proc.pid)
        return [PopenProc(proc)]

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        slots = [ProcessSet(f"worker slot {g}", functools.partial(self._spawn, g), SLOT_RESTARTS,
                            grace_seconds=SLOT_STOP_GRACE_S) for g in self.gpus]
        supervise(slots, self.stop, poll_seconds=0.2)
        return 0


def for_slot(settings: Settings, index: int) -> Settings:
    """The settings of slot (or group) ``index``: its own metrics port."""
    if settings.observability.worker_metrics_port is None:
        return settings
    return settings.replace(worker_metrics_port=settings.observability.worker_metrics_port + index)


async def serve_jobs(settings: Settings, *, pipeline_factory: str | None = None, parent_pid: int | None = None) -> None:
    """One worker slot: a supervisor over the PostgreSQL job source until SIGTERM (or the parent is gone)."""
    from wanflash.compose import build_worker

    worker = build_worker(settings, pipeline_factory=pipeline_factory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if parent_pid is not None:
        # Orphaned (the parent was SIGKILLed): stop gracefully, as on SIGTERM, voiding our leases.
        watch_parent(parent_pid, lambda: loop.call_soon_threadsafe(stop.set))
    worker.supervisor.start()
    try:
        await stop.wait()
    finally:
        await worker.close()


def _child_main(argv: list[str] | None = None) -> int:
    from wanflash.config import Settings

    ap = argparse.ArgumentParser(prog="wanflash-worker-slot")
    ap.add_argument("--slot", required=True)
    ap.add_argument("--parent", type=int, default=None)
    ap.add_argument("--pipeline-factory", default=None)
    args = ap.parse_args(argv)
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    bootstrap_process(settings, label=f"slot {args.slot}")
    asyncio.run(serve_jobs(settings, pipeline_factory=args.pipeline_factory, parent_pid=args.parent))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())

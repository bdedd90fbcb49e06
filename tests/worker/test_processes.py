"""The one process supervisor: backoff arithmetic, restart of a whole set when one member exits,
graceful stop with SIGKILL after the grace period, and the one process bootstrap (logging)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from wanflash.config import Settings
from wanflash.worker.bootstrap import bootstrap_process
from wanflash.worker.processes import PopenProc, ProcessSet, RestartPolicy, Restarts, supervise


def test_backoff_doubles_to_the_cap_and_free_restarts_come_first() -> None:
    assert [RestartPolicy(base=1, cap=30).delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [RestartPolicy(base=1, cap=30, free=1).delay(n) for n in range(1, 5)] == [0, 1, 2, 4]


def test_a_long_run_resets_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    r = Restarts(RestartPolicy(base=1, cap=30, healthy_after=60))
    r.started()
    now[0] += 5
    assert r.exited() == 1
    r.started()
    now[0] += 5
    assert r.exited() == 2  # died young again: doubled
    r.started()
    now[0] += 120
    assert r.exited() == 1 and r.count == 3  # lived past healthy_after: back to the start


def _sleeper() -> PopenProc:
    return PopenProc(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))


def test_a_set_restarts_together_after_one_member_exits() -> None:
    spawned: list[list[PopenProc]] = []

    def spawn() -> list[PopenProc]:
        spawned.append([_sleeper(), _sleeper()])
        return spawned[-1]

    ps = ProcessSet("test set", spawn, RestartPolicy(base=0.3, cap=1))
    ps.start()
    try:
        assert not ps.check()
        spawned[0][1].kill()
        spawned[0][1].join(5)
        assert not ps.check()  # waiting out the backoff; the survivor was stopped with it
        assert not spawned[0][0].is_alive()
        time.sleep(0.4)
        assert ps.check() and ps.restarts == 1 and len(spawned) == 2
        assert all(p.is_alive() for p in ps.procs)
    finally:
        ps.kill()
    assert not any(p.is_alive() for p in ps.procs)


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    procs: list[PopenProc] = []

    def spawn() -> list[PopenProc]:
        p = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline()  # its SIGTERM handler is installed
        procs.append(PopenProc(p))
        return procs[-1:]

    stop = threading.Event()
    sets = [ProcessSet("stubborn", spawn, grace_seconds=0.5)]
    t = threading.Thread(target=supervise, args=(sets, stop, 0.05))
    t.start()
    deadline = time.monotonic() + 20
    while not procs:
        assert time.monotonic() < deadline and t.is_alive(), "the set never started"
        time.sleep(0.05)
    t0 = time.monotonic()
    stop.set()
    t.join(20)
    assert not t.is_alive() and not procs[0].is_alive()
    assert procs[0].exitcode == -9 and 0.4 < time.monotonic() - t0 < 10  # killed after the grace period


def test_bootstrap_honours_log_json() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        bootstrap_process(Settings(log_json=True), label="slot 3")
        out = io.StringIO()
        root.handlers[0].setStream(out)  # type: ignore[attr-defined]
        logging.getLogger("wanflash.worker").info("hello")
        line = json.loads(out.getvalue())
        assert (line["message"], line["process"], line["logger"]) == ("hello", "slot 3", "wanflash.worker")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)

"""What a SIGKILL leaves behind (issue 15, item 5): start-up removes dead processes' tmp/
directories, and an executor child whose parent dies exits at once, even mid-load or mid-render
(it used to run on until its job ended, ~10 s; on a GPU beside the restarted executor)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.api.support import make_settings
from wanflash.worker.supervisor import Supervisor, sweep_tmp

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_dead_processes_tmp_dirs(tmp_path: Path) -> None:
    root = tmp_path / "tmp"
    host = socket.gethostname()
    dead = root / f"{host}-{_dead_pid()}"
    live = root / f"{host}-{os.getpid()}"
    remote = root / f"other-machine-{_dead_pid()}"  # a shared data dir: not ours to judge
    legacy = root / "0b7e8f3c-1111-4222-8333-444455556666-abcd1234"  # the older flat layout
    for d in (dead, live, remote, legacy):
        (d / "job").mkdir(parents=True)
        (d / "job" / "out.mp4").write_bytes(b"x" * 1000)
    assert sweep_tmp(root) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, remote.name])
    assert sweep_tmp(tmp_path / "missing") == 0


def test_supervisor_works_in_its_own_tmp_dir_and_sweeps_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d")
    leftover = Path(settings.data_dir) / "tmp" / f"{socket.gethostname()}-{_dead_pid()}" / "task-x"
    leftover.mkdir(parents=True)
    sup = Supervisor(settings, store=None, storage=None, executor=None)  # type: ignore[arg-type]
    assert sup.tmp_root.name == f"{socket.gethostname()}-{os.getpid()}"
    sweep_tmp(sup.tmp_root.parent)  # what start() does first
    assert not leftover.parent.exists()


PARENT = """
import multiprocessing as mp, sys, time
from wanflash.config import Settings
from wanflash.worker.child import child_main
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=child_main, args=(b, "tests.worker.test_orphans:load_forever",
                                             Settings(data_dir=sys.argv[1], executor="subprocess")), daemon=True)
    p.start()
    print(p.pid, flush=True)
    time.sleep(120)
"""


def load_forever(settings: object) -> object:
    time.sleep(120)  # a model load (or a render) that is nowhere near a pipe read
    raise AssertionError("unreachable in the test")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init to reap it has exited
        return f.read().rpartition(")")[2].split()[0] != "Z"


def test_executor_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        time.sleep(1.0)  # the child is inside the (endless) load
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the executor child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass

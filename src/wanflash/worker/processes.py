"""The one process supervisor: restart with backoff, for every process the worker side keeps alive.

* :class:`RestartPolicy` / :class:`Restarts`: how long to wait before restarting something that
  exited. Consecutive exits of short-lived runs (under ``healthy_after`` seconds) double the
  delay from ``base`` up to ``cap``; a run that lived longer resets it. ``free`` restarts are
  immediate first (the executor child: a crash mid-job is replaced at once, a crash loop is not).
* :class:`ProcessSet`: processes started together and restarted together when any of them
  exits (a ``wanflash worker`` slot is a set of one, a multi-GPU group a set of k ranks), polled
  by :func:`supervise` until a stop event, then stopped: SIGTERM, a grace period, SIGKILL.

Used by ``wanflash worker`` (:mod:`wanflash.worker.distributed`, slot processes),
:mod:`wanflash.worker.group` (rank processes) and the subprocess executor
(:class:`~wanflash.worker.executor.SubprocessExecutor`, which replaces its child on demand with
the same :class:`Restarts`). No torch.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 1.0  # seconds before the first delayed restart
    cap: float = 30.0  # the longest wait
    free: int = 0  # immediate restarts before delays start
    healthy_after: float = 60.0  # a run this long resets the count

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number ``failures`` of a row of short-lived runs."""
        if failures <= self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** (failures - self.free - 1))


class Restarts:
    """The restart count and backoff of one supervised thing."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.count = 0  # restarts so far
        self._failures = 0  # consecutive short-lived runs
        self._started = time.monotonic()

    def started(self) -> None:
        self._started = time.monotonic()

    def exited(self) -> float:
        """Record an exit; the seconds to wait before starting again."""
        self.count += 1
        lived = time.monotonic() - self._started
        self._failures = self._failures + 1 if lived < self.policy.healthy_after else 1
        return self.policy.delay(self._failures)


class Proc(Protocol):
    """What :class:`ProcessSet` needs of a process: ``multiprocessing.Process`` has it; a
    ``subprocess.Popen`` gets it from :class:`PopenProc`."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class PopenProc:
    """A ``subprocess.Popen`` seen as a :class:`Proc`."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int | None:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.is_alive():
            self.popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class ProcessSet:
    """Processes started by ``spawn`` together, and restarted together (after the backoff) when
    any of them exits; :meth:`check` does both, :meth:`stop` ends them."""

    def __init__(self, name: str, spawn: Callable[[], Sequence[Proc]], policy: RestartPolicy = RestartPolicy(),
                 *, grace_seconds: float = 5.0) -> None:
        self.name = name
        self.spawn = spawn
        self.grace_seconds = grace_seconds
        self.procs: list[Proc] = []
        self._restarts = Restarts(policy)
        self._next_start: float | None = None

    @property
    def restarts(self) -> int:
        return self._restarts.count

    def start(self) -> None:
        self.procs = list(self.spawn())
        self._restarts.started()
        self._next_start = None

    def check(self) -> bool:
        """Restart the set if a process exited (after the backoff). True when it was restarted now."""
        if self._next_start is not None:
            if time.monotonic() < self._next_start:
                return False
            self.start()
            return True
        dead = [p for p in self.procs if not p.is_alive()]
        if not dead:
            return False
        codes = [p.exitcode for p in dead]
        self.kill()
        delay = self._restarts.exited()
        log.warning("%s: process(es) exited with %s; restarting all %d in %.0f s (restart #%d)", self.name, codes,
                    len(self.procs), delay, self.restarts)
        self._next_start = time.monotonic() + delay
        return self.check()

    def terminate(self) -> None:
        """SIGTERM every process that is still running."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()

    def reap(self, deadline: float) -> None:
        """Wait for every process until ``deadline`` (monotonic), then SIGKILL what is left."""
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5.0)

    def kill(self) -> None:
        """SIGTERM, the grace period, then SIGKILL."""
        self.terminate()
        self.reap(time.monotonic() + self.grace_seconds)


def supervise(sets: Sequence[ProcessSet], stop: threading.Event, poll_seconds: float = 0.5) -> None:
    """Start the sets and keep them running until ``stop`` is set; then stop every process
    (all are sent SIGTERM at once and get their grace period together)."""
    try:
        for s in sets:
            s.start()
        while not stop.wait(poll_seconds):
            for s in sets:
                s.check()
    finally:
        for s in sets:
            s.terminate()
        start = time.monotonic()
        for s in sets:
            s.reap(start + s.grace_seconds)

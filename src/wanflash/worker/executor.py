"""Executors: where the pipeline runs, by name.

* ``subprocess`` (default): one child made with the multiprocessing *spawn* context (no
  inherited CUDA or event-loop state). It builds the :class:`~wanflash.worker.render.Renderer`
  from a picklable pipeline factory once, and serves jobs over a pipe (:mod:`wanflash.worker.protocol`).
  If the child dies the running job raises :class:`ExecutorDead` (the supervisor re-queues it)
  and a fresh child is started for the next job, with the one process supervisor's backoff
  (:class:`~wanflash.worker.processes.Restarts`: at once, then 1 s doubling to 30 s while
  children keep dying young).
* ``inprocess``: the :class:`~wanflash.worker.render.Renderer` lives in this process and jobs run
  in a worker thread. For tests and debugging; a crash in the pipeline takes the server down with it.

Both expose :class:`Executor`: ``start()`` (non-blocking; loading happens in the background),
``run(job, on_progress)`` returning :class:`Done` or raising :class:`JobCancelled`,
:class:`JobFailed` or :class:`ExecutorDead`, ``cancel(task_uuid)``, ``restart()``, ``stop()`` and
``state`` (an :class:`~wanflash.worker.protocol.ExecutorState`).
``on_loaded`` (settable) is called with the load time in seconds whenever a model finishes loading.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, assert_never

from wanflash.errors import ExecutorDead, JobCancelled, JobFailed
from wanflash.worker.child import child_main
from wanflash.worker.processes import RestartPolicy, Restarts
from wanflash.worker.protocol import (
    Cancel,
    Cancelled,
    Done,
    ExecutorState,
    Failed,
    FromChild,
    LoadFailed,
    Outcome,
    Progress,
    Ready,
    RunJob,
    Shutdown,
    ToChild,
)
from wanflash.worker.render import DEFAULT_FACTORY, PipelineFactory, Renderer

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.pipelines.fake import FakePipeline

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_FACTORY", "Executor", "InProcessExecutor", "SubprocessExecutor", "create_executor",
           "fake_pipeline"]

EXECUTOR_RESTARTS = RestartPolicy(base=1.0, cap=30.0, free=1)
OnProgress = Callable[[Progress], None]
OnLoaded = Callable[[float], None]


def fake_pipeline(settings: Settings) -> FakePipeline:
    """A picklable factory for the numpy-only :class:`FakePipeline` (tests, dry runs)."""
    from wanflash.pipelines.fake import FakePipeline

    return FakePipeline()


class Executor(Protocol):
    name: str
    on_loaded: OnLoaded | None

    def start(self) -> None: ...

    async def wait_ready(self) -> None: ...

    async def run(self, job: RunJob, on_progress: OnProgress) -> Done: ...

    def cancel(self, task_uuid: str) -> None: ...

    async def restart(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def state(self) -> ExecutorState: ...


def outcome(msg: Outcome) -> Done:
    """The :class:`Done`, or the exception the supervisor expects for the other outcomes."""
    match msg:
        case Done():
            return msg
        case Cancelled():
            raise JobCancelled(msg.task_uuid)
        case Failed():
            raise JobFailed(msg.code, msg.message, retryable=msg.retryable)
        case _:
            assert_never(msg)


class InProcessExecutor:
    """Pipeline in this process; each job runs in a thread so the event loop stays free."""

    name = "inprocess"

    def __init__(self, settings: Settings, factory: PipelineFactory | str = DEFAULT_FACTORY) -> None:
        self._settings = settings
        self._factory = factory
        self._renderer: Renderer | None = None
        self._loading: asyncio.Task[None] | None = None
        self._cancel: dict[str, threading.Event] = {}
        self._error: str | None = None
        self.on_loaded: OnLoaded | None = None

    @property
    def state(self) -> ExecutorState:
        if self._error:
            return ExecutorState.FAILED
        if self._renderer is not None:
            return ExecutorState.READY
        return ExecutorState.LOADING if self._loading is not None else ExecutorState.STOPPED

    def start(self) -> None:
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        try:
            t0 = time.monotonic()
            self._renderer = await asyncio.to_thread(Renderer.from_settings, self._settings, self._factory)
            if self.on_loaded is not None:
                self.on_loaded(time.monotonic() - t0)
        except Exception as exc:
            log.exception("pipeline load failed")
            self._error = f"{type(exc).__name__}: {exc}"

    async def wait_ready(self) -> None:
        self.start()
        assert self._loading is not None  # set by start(); not input validation
        await asyncio.shield(self._loading)
        if self._error or self._renderer is None:
            raise JobFailed("modelNotReady", f"the model failed to load: {self._error}")

    async def run(self, job: RunJob, on_progress: OnProgress) -> Done:
        await self.wait_ready()
        renderer = self._renderer
        assert renderer is not None  # wait_ready raised otherwise
        loop = asyncio.get_running_loop()
        flag = self._cancel.setdefault(job.task_uuid, threading.Event())

        def on_step(step: int, total: int, stage: str) -> None:
            if flag.is_set():
                raise JobCancelled(job.task_uuid)
            loop.call_soon_threadsafe(on_progress, Progress(task_uuid=job.task_uuid, step=step, total=total,
                                                            stage=stage))

        try:
            return outcome(await asyncio.to_thread(renderer.run, job, on_step))
        except asyncio.CancelledError:
            flag.set()  # a thread cannot be killed: make it stop at its next step
            raise
        finally:
            self._cancel.pop(job.task_uuid, None)

    def cancel(self, task_uuid: str) -> None:
        if task_uuid in self._cancel:
            self._cancel[task_uuid].set()

    async def restart(self) -> None:
        # A hung thread cannot be killed; the best in-process answer is to stop it at its next step.
        for flag in self._cancel.values():
            flag.set()

    async def stop(self) -> None:
        await self.restart()


class _Dead:
    """The reader thread's own message: the pipe closed (the child exited)."""


_DEAD = _Dead()


class _Child:
    """One spawned child plus a reader thread that forwards its messages into asyncio."""

    def __init__(self, settings: Settings, factory: PipelineFactory | str, loop: asyncio.AbstractEventLoop,
                 on_ready: Callable[[Ready], None] | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=child_main, args=(child_conn, factory, settings),
                                   name="wanflash-executor", daemon=True)
        self.process.start()
        child_conn.close()  # the parent keeps only its end, so EOF is seen when the child dies
        self.inbox: asyncio.Queue[FromChild | _Dead] = asyncio.Queue()
        self.ready: asyncio.Future[Ready] = loop.create_future()
        self._on_ready = on_ready
        self._loop = loop
        self._reader = threading.Thread(target=self._read, name="wanflash-executor-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._deliver, _DEAD)
                return
            self._loop.call_soon_threadsafe(self._deliver, msg)

    def _deliver(self, msg: FromChild | _Dead) -> None:
        if not self.ready.done():
            if isinstance(msg, Ready):
                self.ready.set_result(msg)
                if self._on_ready is not None:
                    self._on_ready(msg)
                return
            if isinstance(msg, LoadFailed):
                self.ready.set_exception(JobFailed("modelNotReady", f"the model failed to load: {msg.message}"))
                return
            if msg is _DEAD:
                self.ready.set_exception(ExecutorDead("the executor process exited while loading the model"))
        self.inbox.put_nowait(msg)

    def send(self, msg: ToChild) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, EOFError, OSError) as exc:
            raise ExecutorDead(f"executor pipe closed: {exc}") from None

    def kill(self, timeout: float = 5.0) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout)
        self.conn.close()


class SubprocessExecutor:
    """The pipeline in a spawned child that is restarted when it dies."""

    name = "subprocess"

    def __init__(self, settings: Settings, factory: PipelineFactory | str = DEFAULT_FACTORY) -> None:
        self._settings = settings
        self._factory = factory
        self._child: _Child | None = None
        self._lock = asyncio.Lock()
        self._current: str | None = None
        self._restarts = Restarts(EXECUTOR_RESTARTS)
        self.on_loaded: OnLoaded | None = None

    @property
    def state(self) -> ExecutorState:
        child = self._child
        if child is None:
            return ExecutorState.STOPPED
        if not child.ready.done():
            return ExecutorState.LOADING
        if child.ready.exception() is not None:
            return ExecutorState.FAILED
        return ExecutorState.READY if child.process.is_alive() else ExecutorState.DEAD

    @property
    def restarts(self) -> int:
        return self._restarts.count

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def start(self) -> None:
        if self._child is None:
            self._child = _Child(self._settings, self._factory, asyncio.get_running_loop(), self._loaded)
            self._restarts.started()

    def _loaded(self, ready: Ready) -> None:
        if self.on_loaded is not None:
            self.on_loaded(ready.load_seconds)

    async def wait_ready(self) -> None:
        self.start()
        assert self._child is not None
        await asyncio.shield(self._child.ready)

    async def run(self, job: RunJob, on_progress: OnProgress) -> Done:
        async with self._lock:  # one job at a time per child
            if self._child is not None and not self._child.process.is_alive():
                await self._replace()
            await self.wait_ready()
            child = self._child
            assert child is not None
            self._current = job.task_uuid
            try:
                child.send(job)
                while True:
                    msg = await child.inbox.get()
                    match msg:
                        case _Dead():
                            code = child.process.exitcode
                            await self._replace()
                            raise ExecutorDead(f"the executor process died (exit code {code}) while running the job")
                        case Progress():
                            if msg.task_uuid == job.task_uuid:
                                on_progress(msg)
                        case Done() | Failed() | Cancelled():
                            if msg.task_uuid == job.task_uuid:
                                return outcome(msg)
                        case Ready() | LoadFailed():
                            pass  # only while loading (consumed by _Child._deliver)
                        case _:
                            assert_never(msg)
            except asyncio.CancelledError:
                # The supervisor gave up on this run (deadline, lost lease, shutdown): the child may
                # be mid-step and cannot be interrupted cleanly, so replace it.
                await self._replace()
                raise
            finally:
                self._current = None

    def cancel(self, task_uuid: str) -> None:
        if self._child is not None and self._current == task_uuid:
            try:
                self._child.send(Cancel(task_uuid=task_uuid))
            except ExecutorDead:
                pass

    async def _replace(self) -> None:
        old, self._child = self._child, None
        if old is not None:
            await asyncio.to_thread(old.kill)
        delay = self._restarts.exited()
        log.warning("restarting the executor process in %.0f s (restart #%d)", delay, self.restarts)
        if delay:
            await asyncio.sleep(delay)
        self.start()

    async def restart(self) -> None:
        await self._replace()

    async def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.send(Shutdown())
        except ExecutorDead:
            pass
        await asyncio.to_thread(child.process.join, 5.0)
        await asyncio.to_thread(child.kill)


def create_executor(settings: Settings, factory: PipelineFactory | str | None = None,
                    kind: str | None = None) -> Executor:
    """``settings.engine.executor`` (or ``kind``) -> an executor running pipelines from ``factory``."""
    chosen = kind or settings.engine.executor
    f: PipelineFactory | str = factory if factory is not None else DEFAULT_FACTORY
    if chosen == "subprocess":
        return SubprocessExecutor(settings, f)
    if chosen == "inprocess":
        return InProcessExecutor(settings, f)
    raise ValueError(f"unknown executor {chosen!r}; choose 'subprocess' or 'inprocess'")

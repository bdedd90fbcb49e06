"""Multi-GPU worker groups: every job runs on k ranks at once with Ulysses context parallelism.

``run_group(settings, gpus=["0", "1", "2", "3"], group_size=2)`` (what ``wanflash worker --gpus
0,1,2,3 --group-size 2`` calls) splits the GPUs into groups of k and keeps each group running
until SIGTERM/SIGINT. This module imports no torch; only the spawned rank processes do, through
:mod:`wanflash.pipelines.parallel`.

Per group, k spawned rank processes (one GPU each, pinned with ``CUDA_VISIBLE_DEVICES``; ``"cpu"``
ranks use gloo, for tests):

* every rank joins the process group, loads the pipeline, applies context parallelism to its
  transformers (:func:`~wanflash.pipelines.parallel.enable_context_parallel`), then waits at a
  barrier until all are loaded;
* **rank 0 (leader)** runs the ordinary :class:`~wanflash.worker.supervisor.Supervisor` (claim,
  heartbeat, progress, cancel, store, complete, all fenced by attempt) with a
  :class:`LeaderExecutor`, which wraps the one render path (:class:`~wanflash.worker.render.Renderer`):
  per job it prepares (input check, promptExtend, shot plan), **broadcasts** the resulting
  :class:`~wanflash.worker.render.Plan`, generates, and alone checks and encodes; the supervisor
  stores the outputs. Its only dependency on
  the job store is the supervisor's (claim/heartbeat/progress/complete/fail/cancelled/
  cancel_requested), built by ``job_source`` (``"module:attr"``; the SQLite store by default);
* **other ranks (followers)** receive the plan, generate it with the same stage, seed and inputs
  (their transformer shards need them), and drop the frames;
* **cancel** is agreed every denoising step: all ranks all-reduce (MAX) a flag that is set only
  on the leader (cancel requested or lease lost), so every rank raises ``JobCancelled`` at the
  same step and the group is free for the next job;
* every job ends with one more all-reduce on every rank, whatever happened: the leader records a
  failure only when that meeting succeeds, so an error caused by a dead peer never fails a task.

A rank that dies takes its group down: a leader whose collective fails exits at once, the parent
notices any exited rank, kills the others and starts the group again (the one process supervisor,
:mod:`wanflash.worker.processes`: backoff 1 s doubling to 30 s when it keeps dying); the running job's lease expires
and it is retried up to ``max_attempts``, as for a lost single-GPU worker. A job past
``job_deadline_seconds`` cannot be interrupted inside a collective, so the leader exits
(:data:`RESTART_EXIT`) and the group restarts the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from wanflash.errors import JobCancelled
from wanflash.worker.bootstrap import bootstrap_process
from wanflash.worker.executor import OnLoaded, OnProgress, outcome
from wanflash.worker.processes import ProcessSet, RestartPolicy, supervise
from wanflash.worker.protocol import Done, ExecutorState, Progress, RunJob
from wanflash.worker.render import DEFAULT_FACTORY, Plan, Renderer, guarded, resolve_factory

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.jobs.source import JobSource, OutboxRenderer
    from wanflash.pipelines.parallel import GroupComm

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "wanflash.worker.group:default_source"
RESTART_EXIT = 75  # the leader gave up on a stuck job: restart the whole group
GROUP_RESTARTS = RestartPolicy(base=1.0, cap=30.0)
# An idle group waits inside a broadcast for the next job, so collectives must not time out on
# their own; dead ranks are found by the parent, stuck jobs by job_deadline_seconds.
COLLECTIVE_TIMEOUT_S = 7 * 86400


def default_source(settings: Settings, *, outbox: OutboxRenderer) -> JobSource:
    """The job source the settings ask for (PostgreSQL with ``database_url``, else the embedded SQLite
    file), rendering webhooks with ``outbox``."""
    from wanflash.jobs.source import db_path, open_job_source

    return open_job_source(settings.jobs, outbox=outbox, sqlite_path=db_path(settings.data_dir))


# ------------------------------------------------------------------ rank processes (torch side)


class LeaderExecutor:
    """The supervisor's executor on rank 0: runs each job on every rank of the group."""

    name = "group"
    state = ExecutorState.READY  # the pipeline is loaded before the supervisor starts
    on_loaded: OnLoaded | None = None  # loaded before the supervisor starts: never called

    def __init__(self, comm: GroupComm, renderer: Renderer) -> None:
        self.comm = comm
        self.renderer = renderer
        self._cancel = threading.Event()
        self._current: str | None = None

    def start(self) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    async def run(self, job: RunJob, on_progress: OnProgress) -> Done:
        loop = asyncio.get_running_loop()
        self._cancel.clear()
        self._current = job.task_uuid

        def progress(step: int, total: int, stage: str) -> None:
            loop.call_soon_threadsafe(on_progress, Progress(task_uuid=job.task_uuid, step=step, total=total,
                                                            stage=stage))

        def denoise_step(step: int, total: int, stage: str) -> None:
            if self._collective(self.comm.agree, self._cancel.is_set()):
                raise JobCancelled(job.task_uuid)
            progress(step, total, stage)

        def work() -> Done:
            prepared = self.renderer.prepare(job, progress)
            self._collective(self.comm.broadcast, prepared.plan)
            try:
                result = self.renderer.generate(prepared.plan, denoise_step)
            finally:
                # Every rank meets here whatever happened. If this collective fails, the error above
                # came from a dead rank (not from the job), so the task must not be failed for it.
                self._collective(self.comm.agree, False)
            return self.renderer.finish(job, prepared, result, progress)

        try:
            return outcome(await asyncio.to_thread(guarded, job, work))
        finally:
            self._current = None

    @staticmethod
    def _collective(op: Any, arg: Any) -> Any:
        """A group collective; when it fails a rank is gone, so exit and let the parent restart the
        group (the task's lease then expires and it is retried, like a lost worker's)."""
        try:
            return op(arg)
        except Exception:
            log.exception("a group collective failed (a rank died?); restarting the worker group")
            os._exit(RESTART_EXIT)

    def cancel(self, task_uuid: str) -> None:
        if self._current == task_uuid:
            self._cancel.set()

    async def restart(self) -> None:
        # Called when a job overran its deadline: the ranks may be stuck in a collective, which
        # nothing in-process can undo. Exiting makes the parent restart the group.
        log.error("group job overran its deadline; restarting the worker group")
        os._exit(RESTART_EXIT)

    async def stop(self) -> None:
        pass


async def _lead(settings: Settings, comm: GroupComm, renderer: Renderer, source: str) -> None:
    from wanflash.compose import build_worker

    # Metrics are served until the process ends; the parent terminates the group.
    opener: Any = resolve_factory(source)  # a "module:attr" job-source factory, not a pipeline factory
    worker = build_worker(settings, open_source=lambda s, render: opener(s, outbox=render),
                          executor=LeaderExecutor(comm, renderer), release_orphans=False)
    worker.supervisor.start()
    await asyncio.Event().wait()  # until the parent terminates this process


def _follow(comm: GroupComm, renderer: Renderer) -> None:
    while True:
        msg = comm.broadcast()
        if not isinstance(msg, Plan):
            return

        def step(i: int, total: int, stage: str, tu: str = msg.task_uuid) -> None:
            if comm.agree(False):
                raise JobCancelled(tu)

        try:
            renderer.generate(msg, step)
        except JobCancelled:
            log.info("task %s cancelled on every rank", msg.task_uuid)
        except Exception:
            log.exception("task %s failed on rank %d (the leader reports the failure)", msg.task_uuid, comm.rank)
        comm.agree(False)  # the end-of-job meeting point (see LeaderExecutor.run)


def _pin_device(gpu: str) -> str:
    """The torch device for ``gpu`` ("cpu", "3" or "cuda:3"), hiding every other GPU from this rank."""
    if gpu == "cpu":
        return "cpu"
    index = gpu.removeprefix("cuda:")
    # Before torch is imported: diffusers picks the device as rank % visible devices, so each
    # rank must see exactly its own GPU (as cuda:0).
    os.environ.update(CUDA_VISIBLE_DEVICES=index)
    return "cuda:0"


def split_targets(pipeline: Any) -> list[Any]:
    """The transformers context parallelism splits: the pipeline's own, or those of the video
    pipeline a wrapper holds (the native-audio wrapper keeps it as ``.video``)."""
    while pipeline is not None:
        transformers = getattr(pipeline, "transformers", None)
        if callable(transformers):
            return list(transformers())
        pipeline = getattr(pipeline, "video", None)
    return []


def rank_main(settings: Settings, rank: int, world: int, init_method: str, gpu: str, factory: str,
              source: str) -> None:
    """Entry point of one rank process (multiprocessing spawn)."""
    bootstrap_process(settings, label=f"rank{rank}", parent_pid=os.getppid())  # an orphaned rank exits
    device = _pin_device(gpu)
    from wanflash.pipelines.parallel import GroupComm, enable_context_parallel

    comm = GroupComm(rank, world, init_method, device, timeout_s=COLLECTIVE_TIMEOUT_S)
    # The leader renders (extender and checker too); followers only generate.
    renderer = Renderer.from_settings(settings.replace(device=device), factory,
                                      generate_only=rank != 0)
    transformers = split_targets(renderer.pipeline)
    if world > 1:
        if transformers:
            enable_context_parallel(transformers, comm)
        else:
            log.warning("rank %d: pipeline %s has no transformers to split: every rank renders the whole job",
                        rank, type(renderer.pipeline).__name__)
    comm.agree(False)  # barrier: the leader claims nothing before every rank is loaded
    log.info("rank %d/%d ready on %s", rank, world, gpu)
    if rank == 0:
        asyncio.run(_lead(settings, comm, renderer, source))
    else:
        _follow(comm, renderer)


# ------------------------------------------------------------------ parent (no torch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GroupRunner(ProcessSet):
    """The k rank processes of one group, restarted all together when any has exited
    (:class:`~wanflash.worker.processes.ProcessSet`: backoff 1 s doubling to 30 s)."""

    def __init__(self, settings: Settings, gpus: list[str], *, factory: str = DEFAULT_FACTORY,
                 job_source: str = DEFAULT_SOURCE) -> None:
        super().__init__(f"worker group {','.join(gpus)}", self._spawn_ranks, GROUP_RESTARTS)
        self.settings = settings
        self.gpus = list(gpus)
        self.factory = factory
        self.job_source = job_source

    def _spawn_ranks(self) -> list[Any]:
        ctx = mp.get_context("spawn")
        init = f"tcp://127.0.0.1:{_free_port()}"  # a fresh rendezvous for every (re)start
        k = len(self.gpus)
        procs = [ctx.Process(target=rank_main, name=f"wanflash-rank{r}",
                             args=(self.settings, r, k, init, self.gpus[r], self.factory, self.job_source))
                 for r in range(k)]
        for p in procs:
            p.start()
        return procs


def run_group(settings: Settings, gpus: list[str], group_size: int, *, factory: str | None = None,
              job_source: str | None = None, stop: threading.Event | None = None) -> None:
    """Run ``len(gpus) // group_size`` worker groups of ``group_size`` ranks until SIGTERM/SIGINT
    (or ``stop``). ``gpus``: CUDA indices (``"0"``, ``"cuda:1"``) or ``"cpu"`` (gloo, tests)."""
    if group_size < 1 or not gpus or len(gpus) % group_size:
        raise ValueError(f"--gpus lists {len(gpus)} devices, not a multiple of --group-size {group_size}")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from wanflash.worker.distributed import for_slot

    runners = [GroupRunner(for_slot(settings, i // group_size), gpus[i:i + group_size],
                           factory=factory or DEFAULT_FACTORY, job_source=job_source or DEFAULT_SOURCE)
               for i in range(0, len(gpus), group_size)]
    try:
        supervise(runners, stop)
    except KeyboardInterrupt:
        pass

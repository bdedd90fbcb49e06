"""The supervisor: claim a task, run it on the executor, store the outputs, complete it.

One asyncio task in the serve process. For each claimed task it

1. makes a private temporary directory and resolves the input keys to local paths (a backend
   without local files, S3, has the inputs downloaded into that directory first);
2. runs the job on the executor while a heartbeat loop extends the lease every
   ``heartbeat_seconds``, stores progress at most about once a second, and forwards a
   cancellation request (or a lost lease) to the executor;
3. probes every encoded file, puts it in storage under ``outputs/{taskUUID}/{i}.{ext}`` and
   completes the task with one result per video (``videoUUID``, ``seed``, ``key``, media facts).

What it serves: at start the supervisor publishes its :class:`~wanflash.jobs.capabilities.WorkerCapabilities`
(profile, fps, audio model, detector, prompt extender, from its settings) into the store, again
every third of ``lease_seconds`` (live for ``lease_seconds``), and withdraws them at stop; the API plans
from them. It claims only from the queues those capabilities serve, and still refuses a claimed
spec planned for another profile or needing a feature it lacks (``profileMismatch``,
``unsupportedAudio``, ``unsupportedSafetyCheck``; not retried) before running anything.

The store is any :class:`~wanflash.jobs.source.JobSource` (embedded SQLite or PostgreSQL). Its
events wake the loop when a task is queued and forward a cancellation to the executor at once;
the heartbeat also polls ``cancel_requested`` in case an event was missed.

Every store write carries the claim's attempt number, so a run whose lease was taken over
writes nothing. Failures map to transitions: :class:`ExecutorDead` and lost leases are
retryable (re-queued up to ``max_attempts``), :class:`JobFailed` says itself, cancellation
ends in ``cancelled``, and a run past ``job_deadline_seconds`` fails with ``timeout``.

Disk full: an ``ENOSPC``/``EDQUOT`` while storing outputs fails the task with ``storageFull``
(not retried: another attempt would fill the same disk), and the outputs already stored for this
attempt are deleted, so no partial set is left (``LocalStore`` never leaves a partial file).

Storage errors other than a full disk (:class:`StorageUnavailable`: S3 unreachable, refused)
fail the attempt as retryable ``storageUnavailable``, so the lease/attempt machinery tries again.

``uploadEndpoint``: after the outputs are stored and before the task completes, each is PUT
with :func:`wanflash.delivery.upload.put_output` (SSRF-guarded, 5xx retried, redirects not
followed); a refusal fails the task with ``uploadFailed`` and the endpoint's answer.

Observability: everything logged while a task is processed carries its ``taskUUID``
(:func:`~wanflash.observability.logs.task_context`), and with ``metrics`` the stage durations
(queue wait, model load, denoise, decode, encode, upload) and the executor's GPU memory report
are recorded from the events seen here (:class:`~wanflash.observability.metrics.StageClock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wanflash.errors import ExecutorDead, JobCancelled, JobFailed
from wanflash.jobs.capabilities import WorkerCapabilities
from wanflash.jobs.model import OutputRecord
from wanflash.jobs.source import Claim, Events, Leases, TaskEvent, WorkerRegistry
from wanflash.observability.logs import task_context
from wanflash.observability.metrics import StageClock
from wanflash.storage.base import StorageUnavailable
from wanflash.worker.executor import Executor
from wanflash.worker.protocol import Done, Progress, RunJob

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.observability.metrics import Metrics
    from wanflash.storage.base import ObjectStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between progress writes per task


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def sweep_tmp(root: Path) -> int:
    """Remove what dead processes left in ``root`` (``data_dir/tmp``): a SIGKILLed worker never
    cleans its task directories, and rendered video there can be gigabytes. A ``<host>-<pid>``
    directory goes when it is this host's and that process is gone; an entry of any other shape
    (the older flat layout) always goes. Returns how many entries were removed."""
    if not root.is_dir():
        return 0
    host = socket.gethostname()
    removed = 0
    for entry in root.iterdir():
        name_host, _, pid = entry.name.rpartition("-")
        if pid.isdigit() and name_host and (name_host != host or _pid_alive(int(pid))):
            continue  # another machine's (shared data dir) or a live process's
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d leftover temporary director%s under %s", removed, "y" if removed == 1 else "ies", root)
    return removed


def capabilities_for(settings: Settings) -> WorkerCapabilities:
    """What a worker started with these settings serves."""
    from wanflash.pipelines.profiles import get_profile  # plain data, no torch

    profile = get_profile(settings.engine.profile)
    return WorkerCapabilities(profile=profile.name, fps=profile.fps, max_clip_frames=profile.max_clip_frames,
                              native_audio=settings.audio.model, safety_detector=settings.safety.detector,
                              prompt_extend=settings.prompt_extend.backend)


class ProgressWriter:
    """Stores one task's progress off the event loop: a database write (an fsync on SQLite) must not
    stall the loop that serves polls and heartbeats. Writes are coalesced to the newest value and
    stored in order by one task at a time; a write that lands after the terminal state is fenced
    out by the store (``state='running'``)."""

    def __init__(self, store: Leases, task_uuid: str, attempt: int) -> None:
        self.store, self.task_uuid, self.attempt = store, task_uuid, attempt
        self._latest: tuple[int, int, str] | None = None
        self._task: asyncio.Task[None] | None = None

    def write(self, step: int, total: int, stage: str) -> None:
        self._latest = (step, total, stage)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush(), name="wanflash-progress")

    async def _flush(self) -> None:
        while self._latest is not None:
            step, total, stage = self._latest
            self._latest = None
            try:
                await asyncio.to_thread(self.store.progress, self.task_uuid, self.attempt, step, total, stage)
            except Exception:  # progress is advisory: a failed write never fails the task
                log.warning("storing progress of task %s failed", self.task_uuid, exc_info=True)

    async def drain(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    def close(self) -> None:
        self._latest = None


class WorkerStore(Leases, Events, WorkerRegistry, Protocol):
    """The roles a worker's supervisor uses: leases and fenced writes, cancel events, its capability record."""


class Supervisor:
    def __init__(self, settings: Settings, store: WorkerStore, storage: ObjectStore, executor: Executor, *,
                 wake: asyncio.Event | None = None, poll_seconds: float = 1.0, release_orphans: bool = True,
                 metrics: Metrics | None = None, capabilities: WorkerCapabilities | None = None) -> None:
        self.settings = settings
        self.caps = capabilities or capabilities_for(settings)
        self.store = store
        self.storage = storage
        self.executor = executor
        self.wake = wake or asyncio.Event()
        self.poll_seconds = poll_seconds
        self.release_orphans = release_orphans
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Each supervisor process works in its own tmp/<host>-<pid>/, so one starting up can tell
        # which leftovers are a dead process's (see sweep_tmp) while others share the data dir.
        self.tmp_root = Path(settings.data_dir) / "tmp" / f"{socket.gethostname()}-{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._advertiser: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.current: str | None = None
        self.metrics = metrics

    def start(self) -> None:
        sweep_tmp(self.tmp_root.parent)
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        # Import what finishing a task needs now, before requests arrive: PyAV's first import
        # holds the GIL for ~50 ms, and made lazily by the first completion it stalled every
        # request in flight (bench/RESULTS.md). API-only processes never start a supervisor.
        import wanflash.delivery.upload  # noqa: F401
        import wanflash.media.probe  # noqa: F401
        if self.metrics is not None and hasattr(self.executor, "on_loaded"):
            metrics = self.metrics
            self.executor.on_loaded = lambda seconds: metrics.observe_stage("load", seconds)
        # Embedded: rows left 'running' by a previous process are orphans, unless other workers share
        # the store (a worker group), whose leases expire instead. PostgreSQL: register with
        # procrastinate (worker heartbeat) and listen for dispatch and abort notifications.
        self.store.worker_started(sole=self.release_orphans)
        # Before the model loads: the API may queue for this worker at once (the task waits for the load).
        self.store.publish_worker(self.owner, self.caps, self.settings.jobs.lease_seconds)
        loop = asyncio.get_running_loop()

        def on_event(event: TaskEvent) -> None:  # called from the store's thread
            if event.kind == "queued":
                loop.call_soon_threadsafe(self.wake.set)
            elif event.kind == "cancel" and event.task_uuid == self.current:
                loop.call_soon_threadsafe(self.executor.cancel, event.task_uuid)

        self._unsubscribe = self.store.subscribe(on_event)
        self.executor.start()
        self._task = loop.create_task(self._loop(), name="wanflash-supervisor")
        self._advertiser = loop.create_task(self._advertise(), name="wanflash-capabilities")

    async def _advertise(self) -> None:
        """Refresh this worker's record, while it runs a task too: it stays live. Every third of its
        ttl, so a record outlives two lost writes, at one write (one fsync embedded) per 10 s by default."""
        while True:
            await asyncio.sleep(self.settings.jobs.lease_seconds / 3)
            try:
                await asyncio.to_thread(self.store.publish_worker, self.owner, self.caps,
                                        self.settings.jobs.lease_seconds)
            except Exception:
                log.warning("publishing this worker's capabilities failed", exc_info=True)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._advertiser is not None:
            self._advertiser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._advertiser
            self._advertiser = None
            try:
                await asyncio.to_thread(self.store.withdraw_worker, self.owner)
            except Exception:
                log.warning("withdrawing this worker's capabilities failed", exc_info=True)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.executor.stop()

    async def _loop(self) -> None:
        while True:
            try:
                claim = await asyncio.to_thread(self.store.claim, self.owner, self.settings.jobs.lease_seconds,
                                                queues=self.caps.queues())
            except Exception:
                log.exception("claim failed")
                claim = None
            if claim is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
                continue
            try:
                await self.process(claim)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor error on task %s", claim.task_uuid)

    async def process(self, claim: Claim) -> None:
        """Run one claimed task to a terminal (or re-queued) state."""
        with task_context(claim.task_uuid):
            await self._process(claim)

    async def _process(self, claim: Claim) -> None:
        spec = claim.spec
        tu, attempt = claim.task_uuid, claim.attempt
        refusal = self.caps.refusal(spec)
        if refusal is not None:
            log.warning("task %s refused: %s", tu, refusal[1])
            await asyncio.to_thread(self.store.fail, tu, attempt, *refusal)
            return
        self.current = tu
        out_dir = Path(tempfile.mkdtemp(prefix=f"{tu}-", dir=self.tmp_root))
        lost = asyncio.Event()
        last_write = 0.0
        stages = StageClock(self.metrics.observe_stage if self.metrics else lambda stage, seconds: None)
        t_start = time.monotonic()
        log.info("task %s attempt %d started (%dx%d, %d frames, %d result(s))", tu, attempt, spec.width,
                 spec.height, spec.num_frames, spec.number_results)

        writer = ProgressWriter(self.store, tu, attempt)

        def on_progress(p: Progress) -> None:
            nonlocal last_write
            stages.progress(p.step, p.total, p.stage)
            now = time.monotonic()
            if now - last_write >= PROGRESS_INTERVAL or p.step == p.total:
                last_write = now
                writer.write(p.step, p.total, p.stage)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.settings.jobs.heartbeat_seconds)
                ok = await asyncio.to_thread(self.store.heartbeat, tu, attempt, self.settings.jobs.lease_seconds)
                if not ok:
                    lost.set()
                    self.executor.cancel(tu)
                    return
                if await asyncio.to_thread(self.store.cancel_requested, tu):
                    self.executor.cancel(tu)

        hb = asyncio.create_task(heartbeat())
        try:
            inputs = await asyncio.to_thread(self._materialize, [spec.image_key, spec.audio_key], out_dir)
            job = RunJob(task_uuid=tu, attempt=attempt, spec_json=spec.model_dump_json(), out_dir=str(out_dir),
                         image_path=inputs[0], audio_path=inputs[1])
            if self.metrics is not None:
                self.metrics.observe_stage("queue_wait", time.time() - claim.created)
            # The model load (the first job's, or a replaced executor's after a crash or a timeout) is not
            # this job's generation: it is waited for outside the deadline, which would otherwise kill
            # every load slower than itself, forever. The lease is kept by the heartbeat meanwhile.
            await self.executor.wait_ready()
            done = await asyncio.wait_for(self._run(job, on_progress, stages), self.settings.jobs.job_deadline_seconds)
            await writer.drain()  # the last progress is stored before the terminal state
            if lost.is_set():
                log.warning("task %s attempt %d lost its lease; dropping its result", tu, attempt)
                return
            stages.begin("upload")
            results = await asyncio.to_thread(self._store_outputs, claim, done)
            if spec.upload_endpoint:
                await self._upload(spec.upload_endpoint, results)
            stages.finish()
            if self.metrics is not None and done.gpu_memory is not None:
                self.metrics.gpu(done.gpu_memory.model_dump())
            if await asyncio.to_thread(self.store.complete, tu, attempt, results):
                log.info("task %s succeeded in %.2f s", tu, time.monotonic() - t_start)
            else:
                log.warning("task %s attempt %d is stale; completion not recorded", tu, attempt)
        except JobCancelled:
            if lost.is_set():
                return
            log.info("task %s cancelled", tu)
            await asyncio.to_thread(self.store.cancelled, tu, attempt)
        except ExecutorDead as exc:
            log.warning("task %s: %s", tu, exc)
            await asyncio.to_thread(self.store.fail, tu, attempt, "workerLost", str(exc), retryable=True)
        except TimeoutError:
            await self.executor.restart()
            await asyncio.to_thread(
                self.store.fail, tu, attempt, "timeout",
                f"generation did not finish within {self.settings.jobs.job_deadline_seconds:.0f} s")
        except JobFailed as exc:
            log.warning("task %s failed: %s: %s", tu, exc.code, exc.message)
            await asyncio.to_thread(self.store.fail, tu, attempt, exc.code, exc.message, retryable=exc.retryable)
        except StorageUnavailable as exc:
            log.warning("task %s: %s", tu, exc)
            await asyncio.to_thread(self.store.fail, tu, attempt, "storageUnavailable", str(exc), retryable=True)
        except asyncio.CancelledError:
            # Shutdown: leave the row 'running'. Embedded: the next start re-queues it (worker_started);
            # PostgreSQL: closing the source voids this process's leases, so any worker re-queues it.
            raise
        except Exception as exc:
            log.exception("task %s failed", tu)
            await asyncio.to_thread(self.store.fail, tu, attempt, "internalServerError",
                                    f"{type(exc).__name__}: {exc}")
        finally:
            hb.cancel()
            writer.close()
            self.current = None
            shutil.rmtree(out_dir, ignore_errors=True)

    async def _run(self, job: RunJob, on_progress: Any, stages: StageClock) -> Done:
        stages.begin("denoise")  # the model is loaded (awaited in _process), so a load is not counted here
        done = await self.executor.run(job, on_progress)
        stages.finish()
        return done

    async def _upload(self, endpoint: str, results: list[OutputRecord]) -> None:
        """PUT the output to ``uploadEndpoint``.

        A presigned URL names one object and its signature covers the path, so a suffix per
        result would break it: with ``numberResults`` > 1 the endpoint receives **result 1 only**
        (index 0); every result stays retrievable through ``getResponse`` and the webhook.
        Raises :class:`JobFailed` ``uploadFailed`` (not retryable) on a 4xx, a redirect or
        exhausted 5xx retries.
        """
        from wanflash.delivery.upload import put_output
        from wanflash.storage.base import content_type_for

        first = results[0].key
        path = self.storage.local_path(first)
        await put_output(endpoint, path if path is not None else self.storage.read_bytes(first),
                         content_type=content_type_for(first), allow_loopback=self.settings.limits.allow_loopback_fetch)

    def _materialize(self, keys: list[str | None], out_dir: Path) -> list[str | None]:
        """Local paths for the input keys: the store's own file, or a download into ``out_dir/inputs``."""
        paths: list[str | None] = []
        for key in keys:
            if key is None:
                paths.append(None)
                continue
            path = self.storage.local_path(key)
            if path is None:
                path = out_dir / "inputs" / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.storage.read_bytes(key))
            paths.append(str(path))
        return paths

    def _store_outputs(self, claim: Claim, done: Done) -> list[OutputRecord]:
        """Probe each encoded file, store it under its key, and describe it (runs in a thread)."""
        from wanflash.media.probe import probe_file

        spec = claim.spec
        results: list[OutputRecord] = []
        for out in sorted(done.outputs, key=lambda o: o.index):
            path = Path(out.path)
            try:
                info = probe_file(path, decode=False)  # the encoder is ours; header + packet count suffice
            except Exception as exc:
                raise JobFailed("encodingFailed", f"output {out.index} is not a valid video: {exc}") from exc
            if info.width != spec.width or info.height != spec.height:
                raise JobFailed("encodingFailed", f"output {out.index} is {info.width}x{info.height}, "
                                f"expected {spec.width}x{spec.height}")
            key = f"outputs/{claim.task_uuid}/{out.index}{path.suffix}"
            try:
                self.storage.put_file(key, path)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                for r in results:  # all or nothing: no partial set of outputs stays behind
                    self.storage.delete(r.key)
                raise JobFailed("storageFull", "The server ran out of disk space while storing the output; "
                                "the task was not completed.") from exc
            checked = done.safety.results if done.safety is not None else []
            results.append(OutputRecord(
                video_uuid=str(uuid.uuid4()), seed=out.seed, key=key, format=out.fmt,
                width=info.width, height=info.height, frames=info.frames, fps=info.fps, duration=info.duration,
                audio=info.audio_codec is not None, size_bytes=path.stat().st_size,
                prompt_extend=done.prompt_extend,
                nsfw_content=checked[out.index].nsfw_content if out.index < len(checked) else None))
        return results

"""The supervisor: claim a task, run it on the executor, store the outputs, complete it.

One asyncio task in the serve process. For each claimed task it

1. resolves the input keys to local paths and makes a private temporary directory;
2. runs the job on the executor while a heartbeat loop extends the lease every
   ``heartbeat_seconds``, stores progress at most about once a second, and forwards a
   cancellation request (or a lost lease) to the executor;
3. probes every encoded file, puts it in storage under ``outputs/{taskUUID}/{i}.{ext}`` and
   completes the task with one result per video (``videoUUID``, ``seed``, ``key``, media facts).

Every store write carries the claim's attempt number, so a run whose lease was taken over
writes nothing. Failures map to transitions: :class:`ExecutorDead` and lost leases are
retryable (re-queued up to ``max_attempts``), :class:`JobFailed` says itself, cancellation
ends in ``cancelled``, and a run past ``job_deadline_seconds`` fails with ``timeout``.

Disk full: an ``ENOSPC``/``EDQUOT`` while storing outputs fails the task with ``storageFull``
(not retried: another attempt would fill the same disk), and the outputs already stored for this
attempt are deleted, so no partial set is left (``LocalStore`` never leaves a partial file).

``uploadEndpoint``: after the outputs are stored and before the task completes, each is PUT
with :func:`wanflash.delivery.upload.put_output` (SSRF-guarded, 5xx retried, redirects not
followed); a refusal fails the task with ``uploadFailed`` and the endpoint's answer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanflash.errors import ExecutorDead, JobCancelled, JobFailed
from wanflash.jobs.store import Claim, TaskStore
from wanflash.worker.executor import Executor
from wanflash.worker.protocol import Done, Progress, RunJob

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.storage.local import LocalStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between progress writes per task


class Supervisor:
    def __init__(self, settings: "Settings", store: TaskStore, storage: "LocalStore", executor: Executor, *,
                 wake: asyncio.Event | None = None, poll_seconds: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.executor = executor
        self.wake = wake or asyncio.Event()
        self.poll_seconds = poll_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tmp_root = Path(settings.data_dir) / "tmp"
        self._task: asyncio.Task[None] | None = None
        self.current: str | None = None

    def start(self) -> None:
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        # Embedded mode has exactly one worker: rows left 'running' by a previous process are orphans.
        self.store.release_all_leases()
        self.executor.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="wanflash-supervisor")

    async def stop(self) -> None:
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
                claim = await asyncio.to_thread(self.store.claim, self.owner, self.settings.lease_seconds)
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
        spec = claim.spec
        tu, attempt = claim.task_uuid, claim.attempt
        self.current = tu
        out_dir = Path(tempfile.mkdtemp(prefix=f"{tu}-", dir=self.tmp_root))
        job = RunJob(
            task_uuid=tu, attempt=attempt, spec_json=spec.model_dump_json(), out_dir=str(out_dir),
            image_path=self._path(spec.image_key), audio_path=self._path(spec.audio_key),
        )
        lost = asyncio.Event()
        last_write = 0.0

        def on_progress(p: Progress) -> None:
            nonlocal last_write
            now = time.monotonic()
            if now - last_write >= PROGRESS_INTERVAL or p.step == p.total:
                last_write = now
                self.store.progress(tu, attempt, p.step, p.total, p.stage)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.settings.heartbeat_seconds)
                ok = await asyncio.to_thread(self.store.heartbeat, tu, attempt, self.settings.lease_seconds)
                if not ok:
                    lost.set()
                    self.executor.cancel(tu)
                    return
                if await asyncio.to_thread(self.store.cancel_requested, tu):
                    self.executor.cancel(tu)

        hb = asyncio.create_task(heartbeat())
        try:
            done = await asyncio.wait_for(self.executor.run(job, on_progress), self.settings.job_deadline_seconds)
            if lost.is_set():
                log.warning("task %s attempt %d lost its lease; dropping its result", tu, attempt)
                return
            results = await asyncio.to_thread(self._store_outputs, claim, done)
            if spec.upload_endpoint:
                await self._upload(spec.upload_endpoint, results)
            if not await asyncio.to_thread(self.store.complete, tu, attempt, results):
                log.warning("task %s attempt %d is stale; completion not recorded", tu, attempt)
        except JobCancelled:
            if lost.is_set():
                return
            await asyncio.to_thread(self.store.cancelled, tu, attempt)
        except ExecutorDead as exc:
            log.warning("task %s: %s", tu, exc)
            await asyncio.to_thread(self.store.fail, tu, attempt, "workerLost", str(exc), retryable=True)
        except TimeoutError:
            await self.executor.restart()
            await asyncio.to_thread(
                self.store.fail, tu, attempt, "timeout",
                f"generation did not finish within {self.settings.job_deadline_seconds:.0f} s")
        except JobFailed as exc:
            await asyncio.to_thread(self.store.fail, tu, attempt, exc.code, exc.message, retryable=exc.retryable)
        except asyncio.CancelledError:
            # Shutdown: leave the row 'running'; the next start re-queues it (release_all_leases).
            raise
        except Exception as exc:
            log.exception("task %s failed", tu)
            await asyncio.to_thread(self.store.fail, tu, attempt, "internalServerError",
                                    f"{type(exc).__name__}: {exc}")
        finally:
            hb.cancel()
            self.current = None
            shutil.rmtree(out_dir, ignore_errors=True)

    async def _upload(self, endpoint: str, results: list[dict[str, Any]]) -> None:
        """PUT the output to ``uploadEndpoint``.

        A presigned URL names one object and its signature covers the path, so a suffix per
        result would break it: with ``numberResults`` > 1 the endpoint receives **result 1 only**
        (index 0); every result stays retrievable through ``getResponse`` and the webhook.
        Raises :class:`JobFailed` ``uploadFailed`` (not retryable) on a 4xx, a redirect or
        exhausted 5xx retries.
        """
        from wanflash.delivery.upload import put_output
        from wanflash.storage.base import content_type_for

        first = results[0]["key"]
        path = self.storage.local_path(first)
        await put_output(endpoint, path if path is not None else self.storage.read_bytes(first),
                         content_type=content_type_for(first), allow_loopback=self.settings.allow_loopback_fetch)

    def _path(self, key: str | None) -> str | None:
        if key is None:
            return None
        path = self.storage.local_path(key)
        return str(path) if path is not None else None

    def _store_outputs(self, claim: Claim, done: Done) -> list[dict[str, Any]]:
        """Probe each encoded file, store it under its key, and describe it (runs in a thread)."""
        from wanflash.media.probe import probe_file

        spec = claim.spec
        results: list[dict[str, Any]] = []
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
                    self.storage.delete(r["key"])
                raise JobFailed("storageFull", "The server ran out of disk space while storing the output; "
                                "the task was not completed.") from exc
            results.append({
                "videoUUID": str(uuid.uuid4()),
                "seed": out.seed,
                "key": key,
                "format": out.fmt,
                "width": info.width,
                "height": info.height,
                "frames": info.frames,
                "fps": info.fps,
                "duration": info.duration,
                "audio": info.audio_codec is not None,
                "bytes": path.stat().st_size,
            })
            if "promptExtend" in done.info:
                results[-1]["promptExtend"] = done.info["promptExtend"]
            safety = done.info.get("safety")
            if isinstance(safety, dict) and out.index < len(safety.get("results", [])):
                results[-1]["NSFWContent"] = bool(safety["results"][out.index]["NSFWContent"])
        return results

"""The async face of the job store for the API: submit, poll, cancel.

Every call runs the (short, fsyncing) SQLite statement in a worker thread so the event loop
keeps serving WebSocket pings while the disk syncs. ``submit`` wakes the supervisor so a new
task starts without waiting for its poll interval, and turns a reused taskUUID into the
``conflictTaskUUID`` error the SDKs' retry logic understands (protocol §2.3).

Submits are group-committed: while one batch is being written (one SQLite transaction, one
fsync), new submits queue up and go together in the next, so a burst of N clients costs a few
fsyncs, not N serialized ones. Each submit still returns only once its row is durable. The
commits run on the service's own thread, so they never queue behind the supervisor's file copies
in the default thread pool.

Point reads of an adapter with ``inline_reads`` (SQLite) run on the event loop: a poll is an
index lookup of a few tens of microseconds, while a hop through the shared pool costs
milliseconds under load (the queue behind fsyncs, then the GIL hand-back). PostgreSQL reads are
round trips and keep the hop, and so does ``counts``, which scans the table.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from wanflash.errors import InvalidRequest, RunwareError, ServiceOverloaded
from wanflash.jobs.capabilities import WorkerRecord
from wanflash.jobs.model import JobSpec
from wanflash.jobs.source import (
    DuplicateTask,
    InFlightExceeded,
    InsertRequest,
    Submissions,
    TaskRecord,
    Upload,
    UploadStore,
    WorkerRegistry,
)

TASK_TYPE = "videoInference"
R = TypeVar("R")


class ApiStore(Submissions, UploadStore, WorkerRegistry, Protocol):
    """The roles the API's job service uses: submit and poll, resolve uploads, read the live workers."""


class JobService:
    def __init__(self, store: ApiStore, wake: asyncio.Event | None = None) -> None:
        self.store = store
        self.wake = wake or asyncio.Event()
        self._pending: list[tuple[InsertRequest, asyncio.Future[Exception | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanflash-commit")

    def close(self) -> None:
        self._commits.shutdown(wait=True)

    async def _read(self, fn: Callable[..., R], *args: object) -> R:
        if self.store.inline_reads:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def submit(self, spec: JobSpec, *, key_hash: str | None = None, max_in_flight: int | None = None) -> None:
        """Persist a queued task (durable when this returns). Raises InvalidRequest on a reused id,
        ServiceOverloaded (429) when the key already has ``max_in_flight`` tasks queued or running."""
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._pending.append((InsertRequest(spec, key_hash, max_in_flight), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="wanflash-submit-writer")
        # shield: a client that goes away must not cancel the write other submits share.
        exc = await asyncio.shield(done)
        try:
            if exc is not None:
                raise exc
        except InFlightExceeded as exc:
            raise ServiceOverloaded(
                f"This API key already has {exc.in_flight} tasks queued or running (limit {max_in_flight}); "
                "retry when one finishes.", retry_after=1.0) from None
        except DuplicateTask:
            raise InvalidRequest([RunwareError(
                "conflictTaskUUID", f"A task with taskUUID '{spec.task_uuid}' already exists; use a new UUID.",
                parameter="taskUUID", task_type=TASK_TYPE, task_uuid=spec.task_uuid,
            )]) from None
        self.wake.set()

    async def _write_batches(self) -> None:
        """Write everything queued, one transaction per round, until nothing is left."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._commits, self.store.insert_many, [r for r, _ in batch])
            except Exception as exc:  # I/O error: the whole batch was rolled back; each submit fails
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    async def in_flight(self, key_hash: str) -> int:
        return await self._read(self.store.in_flight, key_hash)

    async def exists(self, task_uuid: str) -> bool:
        return await self.get(task_uuid) is not None

    async def get(self, task_uuid: str) -> TaskRecord | None:
        return await self._read(self.store.get, task_uuid)

    async def cancel(self, task_uuid: str) -> bool:
        return await asyncio.to_thread(self.store.request_cancel, task_uuid)

    async def add_upload(self, upload_uuid: str, kind: str, key: str, content_type: str, *,
                         owner: str | None = None) -> None:
        await asyncio.to_thread(functools.partial(self.store.add_upload, upload_uuid, kind, key, content_type,
                                                  owner=owner))

    async def touch_upload(self, upload_uuid: str) -> None:
        await asyncio.to_thread(self.store.touch_upload, upload_uuid)

    async def get_upload(self, upload_uuid: str) -> Upload | None:
        return await self._read(self.store.get_upload, upload_uuid)

    async def workers(self) -> list[WorkerRecord]:
        """The published workers (:meth:`~wanflash.jobs.source.WorkerRegistry.workers`): a few rows, read like a
        poll."""
        return await self._read(self.store.workers)

    async def counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self.store.counts)  # a scan of the whole table: never on the loop

"""The async face of the job store for the API: submit, poll, cancel.

Every call runs the (short, fsyncing) SQLite statement in a worker thread so the event loop
keeps serving WebSocket pings while the disk syncs. ``submit`` wakes the supervisor so a new
task starts without waiting for its poll interval, and turns a reused taskUUID into the
``conflictTaskUUID`` error the SDKs' retry logic understands (protocol §2.3).
"""

from __future__ import annotations

import asyncio

from wanflash.errors import InvalidRequest, RunwareError, ServiceOverloaded
from wanflash.jobs.model import JobSpec
from wanflash.jobs.source import DuplicateTask, InFlightExceeded, JobSource, TaskRecord, Upload

TASK_TYPE = "videoInference"


class JobService:
    def __init__(self, store: JobSource, wake: asyncio.Event | None = None) -> None:
        self.store = store
        self.wake = wake or asyncio.Event()

    async def submit(self, spec: JobSpec, *, key_hash: str | None = None, max_in_flight: int | None = None) -> None:
        """Persist a queued task (durable when this returns). Raises InvalidRequest on a reused id,
        ServiceOverloaded (429) when the key already has ``max_in_flight`` tasks queued or running."""
        try:
            await asyncio.to_thread(self.store.insert, spec, key_hash=key_hash, max_in_flight=max_in_flight)
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

    async def in_flight(self, key_hash: str) -> int:
        return await asyncio.to_thread(self.store.in_flight, key_hash)

    async def exists(self, task_uuid: str) -> bool:
        return await self.get(task_uuid) is not None

    async def get(self, task_uuid: str) -> TaskRecord | None:
        return await asyncio.to_thread(self.store.get, task_uuid)

    async def cancel(self, task_uuid: str) -> bool:
        return await asyncio.to_thread(self.store.request_cancel, task_uuid)

    async def add_upload(self, upload_uuid: str, kind: str, key: str, content_type: str) -> None:
        await asyncio.to_thread(self.store.add_upload, upload_uuid, kind, key, content_type)

    async def get_upload(self, upload_uuid: str) -> Upload | None:
        return await asyncio.to_thread(self.store.get_upload, upload_uuid)

    async def counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self.store.counts)

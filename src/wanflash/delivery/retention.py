"""Media lifetime: stored inputs, outputs and uploads are deleted once nobody can or will fetch them.

Guarantees:

* Only terminal tasks are swept, and only once their links have expired (``finished`` + ``ttl``,
  the instant :func:`~wanflash.delivery.responses.expires_at` gives every link of the task) and
  ``WANFLASH_MEDIA_GRACE_SECONDS`` more have passed. The grace lets a download that started before
  the expiry finish and resume (an open file outlives its unlink; a Range request does not).
* Only the task's own objects go: its result files (``outputs/<taskUUID>/``) and its inputs
  (``inputs/<taskUUID>/``). Uploads (``imageUpload``, ``mediaStorage``) are referenced by UUID from
  any number of tasks, so they have their own clock: each is deleted
  ``WANFLASH_UPLOAD_RETENTION_SECONDS`` (30 days, Runware's figure) after its last use by a task,
  or after its upload if no task used it. The object goes first, then the index row, so a crash in
  between leaves a row whose next sweep finishes the job, never an object nobody can reach.
* The task row stays, marked (``media_deleted``): ``getResponse`` keeps answering with the same
  items, whose links had already expired (``410 Gone``).
* A storage error leaves the task due and the next pass retries it; a missing object counts as
  deleted. Several processes may sweep (API replicas): deleting twice is harmless.
* ``media_grace_seconds = -1`` keeps task media, ``upload_retention_seconds = -1`` keeps uploads;
  with both, no sweeper runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wanflash.delivery.background import BackgroundLoop
from wanflash.jobs.source import MediaRetention, TaskRecord, Upload
from wanflash.observability.logs import task_context
from wanflash.storage.base import ObjectStore, StorageUnavailable

if TYPE_CHECKING:
    from wanflash.config import JobsConfig
    from wanflash.observability.metrics import Metrics

log = logging.getLogger(__name__)


def task_keys(record: TaskRecord) -> list[str]:
    """The storage keys that belong to this task alone: its outputs and its inputs."""
    tu = record.task_uuid
    own = (f"outputs/{tu}/", f"inputs/{tu}/")
    keys = [r.key for r in record.results or []] + [record.spec.image_key, record.spec.audio_key]
    return [k for k in keys if isinstance(k, str) and k.startswith(own)]


class MediaSweeper(BackgroundLoop):
    """A periodic pass next to the webhook outbox: ``run_once`` deletes everything due now."""

    task_name = "wanflash-media-sweeper"

    def __init__(self, store: MediaRetention, storage: ObjectStore, *, default_ttl: int, grace: float | None,
                 upload_retention: float | None = None, interval: float = 300.0, batch: int = 200,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.storage = storage
        self.default_ttl = default_ttl
        self.grace = grace  # None: task media is kept
        self.upload_retention = upload_retention  # None: uploads are kept
        self.interval = interval
        self.batch = batch
        self.metrics = metrics
        self.clock = clock

    async def _loop(self) -> None:
        while True:  # the first pass runs at start-up: what expired while the service was down goes first
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("media sweep failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """Delete everything due now; returns how many tasks' media and uploads were deleted."""
        swept = 0
        if self.grace is not None:
            grace = self.grace
            swept += await self._drain(lambda: self.store.media_due(self.clock(), default_ttl=self.default_ttl,
                                                                    grace=grace, limit=self.batch), self._sweep)
        if self.upload_retention is not None:
            retention = self.upload_retention
            swept += await self._drain(lambda: self.store.uploads_due(self.clock() - retention, limit=self.batch),
                                       self._sweep_uploads)
        return swept

    async def _drain(self, due: Callable[[], list[Any]], sweep: Callable[[list[Any]], int]) -> int:
        swept = 0
        while True:
            batch = await asyncio.to_thread(due)
            done = await asyncio.to_thread(sweep, batch)
            swept += done
            if len(batch) < self.batch or done == 0:  # nothing left, or the storage is failing: next pass
                return swept

    def _delete(self, keys: list[str], what: str) -> bool:
        """Delete ``keys`` (missing ones count as deleted); False, logged, when the storage fails."""
        try:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self.storage.delete(key)
        except (StorageUnavailable, OSError) as exc:
            log.warning("%s not deleted yet: %s", what, exc)
            return False
        return True

    def _sweep_uploads(self, uploads: list[Upload]) -> int:
        done = 0
        for up in uploads:
            if self._delete([up.key], f"upload {up.upload_uuid}"):
                self.store.delete_upload(up.upload_uuid)  # after the object: a crash leaves a row, never an orphan
                log.info("deleted upload %s (unused for the retention period)", up.upload_uuid)
                done += 1
                if self.metrics is not None:
                    self.metrics.uploads_deleted.inc()
        return done

    def _sweep(self, records: list[TaskRecord]) -> int:
        done = 0
        for record in records:
            with task_context(record.task_uuid):
                if self._delete(task_keys(record), f"media of task {record.task_uuid}"):
                    self.store.media_deleted(record.task_uuid)
                    log.info("deleted the media of task %s (links expired)", record.task_uuid)
                    done += 1
                    if self.metrics is not None:
                        self.metrics.media_deleted.inc()
        return done


def build(config: JobsConfig, store: MediaRetention, storage: ObjectStore,
          metrics: Metrics | None = None) -> MediaSweeper | None:
    """The sweeper the settings ask for (not yet started); None when both retentions are -1 (keep all)."""
    grace = config.media_grace_seconds if config.media_grace_seconds >= 0 else None
    uploads = config.upload_retention_seconds if config.upload_retention_seconds >= 0 else None
    if grace is None and uploads is None:
        return None
    return MediaSweeper(store, storage, default_ttl=config.default_ttl_seconds, grace=grace,
                        upload_retention=uploads, interval=config.media_sweep_seconds, metrics=metrics)

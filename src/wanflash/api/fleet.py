"""What the API plans for: the capabilities the workers published, not the API's own settings.

fps and frame count (``duration x fps``) come from the profile a task will run on, and whether
generated audio or a content check can be accepted depends on the workers' audio model and
detector; an API replica needs none of the engine settings. :meth:`Fleet.plan_target` picks,
for one request:

1. the pool: the **live** workers' records (published within ``lease_seconds``); with none live,
   this process's own settings when it hosts the worker (``wanflash serve``, whose in-process
   supervisor publishes them anyway); else the **last-known** records (workers seen in the last
   7 days; the task waits in its queue until such a worker is back); with none ever, the request
   is refused with ``noWorkerAvailable`` (HTTP 503, ``parameter: model``);
2. the workers of that pool that can serve the request: an audio model when its sound must be
   generated, a detector when it asks for a content check; none → ``unsupportedAudio`` (naming
   ``providerSettings.alibaba.audio``) or ``unsupportedSafetyCheck`` (naming ``safety.mode`` or
   ``safety.checkContent``), the codes a single server answered before;
3. among those, the profile served by the most live workers (ties: the first by name), or of
   last-known records the one seen last; its record is what
   :func:`~wanflash.contract.validation.plan_job` plans with, and the task waits in that profile's queue.

The records are read from the job source at most every ``refresh_seconds`` (one index read per
second on SQLite, one round trip on PostgreSQL), so a submit costs no extra query.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from wanflash.contract.validation import (
    needs_generated_audio,
    requested_safety_mode,
    unsupported_audio,
    unsupported_safety,
)
from wanflash.errors import InvalidRequest, RunwareError
from wanflash.jobs.capabilities import WorkerCapabilities, WorkerRecord

if TYPE_CHECKING:
    from wanflash.contract.protocol import VideoInferenceTask
    from wanflash.jobs.service import JobService

NO_WORKER_STATUS = 503


class Fleet:
    def __init__(self, jobs: JobService, *, own: WorkerCapabilities | None, refresh_seconds: float = 1.0) -> None:
        self.jobs = jobs
        self.own = own  # set where this process hosts the worker (wanflash serve)
        self.refresh_seconds = refresh_seconds
        self._records: list[WorkerRecord] | None = None
        self._read_at = 0.0

    async def records(self) -> list[WorkerRecord]:
        """The published workers (cached for ``refresh_seconds``)."""
        if self._records is None or time.monotonic() - self._read_at >= self.refresh_seconds:
            self._records = await self.jobs.workers()
            self._read_at = time.monotonic()
        return self._records

    async def plan_target(self, task: VideoInferenceTask) -> WorkerCapabilities:
        """The capabilities to plan ``task`` with; raises :class:`InvalidRequest` when nothing can serve it."""
        return select(task, await self.records(), own=self.own, now=time.time())

    async def preview(self) -> WorkerCapabilities | None:
        """What a request with no special needs would be planned with (the playground's header), if anything."""
        now = time.time()
        pool = _pool(await self.records(), own=self.own, now=now)
        return _best(pool, now) if pool else None

    async def summary(self) -> list[dict[str, object]]:
        """The live workers, by capabilities (for ``/health``)."""
        now = time.time()
        counts: dict[WorkerCapabilities, int] = defaultdict(int)
        for r in await self.records():
            if r.live(now):
                counts[r.caps] += 1
        return [{**caps.model_dump(), "workers": n} for caps, n in counts.items()]


def _pool(records: list[WorkerRecord], *, own: WorkerCapabilities | None, now: float) -> list[WorkerRecord]:
    live = [r for r in records if r.live(now)]
    if live:
        return live
    if own is not None:
        return [WorkerRecord("self", own, now, now + 1)]
    return records  # last-known


def _best(pool: list[WorkerRecord], now: float) -> WorkerCapabilities:
    by_profile: dict[str, list[WorkerRecord]] = defaultdict(list)
    for r in pool:
        by_profile[r.caps.profile].append(r)
    if pool[0].live(now):  # the profile most live workers serve (ties: the first name, as on every replica)
        profile = min(by_profile, key=lambda p: (-len(by_profile[p]), p))
    else:  # last-known: the profile seen last
        profile = min(by_profile, key=lambda p: (-max(r.seen for r in by_profile[p]), p))
    return max(by_profile[profile], key=lambda r: r.seen).caps


def select(task: VideoInferenceTask, records: list[WorkerRecord], *, own: WorkerCapabilities | None,
           now: float) -> WorkerCapabilities:
    """The pure rule behind :meth:`Fleet.plan_target` (see the module docstring)."""
    pool = _pool(records, own=own, now=now)
    if not pool:
        raise InvalidRequest([RunwareError(
            "noWorkerAvailable", "No worker serving this model has registered yet; retry once a `wanflash worker` "
            "is running.", "model", "videoInference", task.taskUUID)], status=NO_WORKER_STATUS)
    audio = needs_generated_audio(task)
    safety = requested_safety_mode(task) != "none"
    fits = [r for r in pool if (r.caps.audio or not audio) and (r.caps.safety or not safety)]
    if fits:
        return _best(fits, now)
    errors: list[RunwareError] = []
    if audio and not any(r.caps.audio for r in pool):
        errors.append(unsupported_audio(task.taskUUID, "No worker of this service has an audio model"))
    if safety and not any(r.caps.safety for r in pool):
        errors.append(unsupported_safety(task, "no worker of this service has a content detector "
                                         "(WANFLASH_SAFETY_DETECTOR)"))
    if not errors:  # each is served somewhere, never both by one worker
        errors.append(unsupported_safety(task, "no worker of this service has a content detector and an audio "
                                         "model together (ask for one of the two)"))
    raise InvalidRequest(errors)

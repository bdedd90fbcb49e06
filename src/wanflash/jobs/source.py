"""The job source ports: what the API, the workers and the background loops need from the task table,
one protocol per role, so each consumer is typed with only what it uses:

* :class:`Submissions` (5 methods): submit, poll, cancel, count (the API);
* :class:`Leases` (8): claim and the attempt-fenced writes (the worker's supervisor);
* :class:`Events` (1): task events for listeners;
* :class:`WorkerRegistry` (3): what the live workers serve;
* :class:`Outbox` (2): the webhook outbox (the delivery loop);
* :class:`KeyStore` (5): API key digests;
* :class:`UploadStore` (3): the upload index;
* :class:`MediaRetention` (4): what the retention sweeper deletes.

:class:`JobSource` is their union plus ``close``: what one adapter implements and the process opens.
Two adapters implement it:

* :class:`wanflash.jobs.store.SqliteJobSource` (embedded, the default): one SQLite file; the task table
  is both the queue and the source of truth.
* :class:`wanflash.jobs.postgres.PostgresJobSource` (distributed): the task table lives in
  PostgreSQL and stays the source of truth; procrastinate dispatches (priority, a queueing lock
  per taskUUID, worker heartbeats and stalled-job retry, abort, LISTEN/NOTIFY).

The contract both keep (``tests/jobs/test_jobsource_contract.py`` runs the same suite on each):

* ``taskUUID`` is the primary key: a second insert is refused with :class:`DuplicateTask`.
* Claims are ordered by ``priority`` (higher first), then FIFO; a task is claimed by one worker
  at a time, and each claim increments ``attempt``.
* Every worker write (heartbeat, progress, complete, fail, cancelled) is fenced by
  ``(task_uuid, attempt, state='running')``: a stale attempt writes nothing and gets ``False``.
* An expired lease re-queues the task while ``attempt < max_attempts``, else fails it with
  ``workerLost``. Terminal transitions write the webhook outbox rows in the same transaction.
* A queued task is cancelled at once; a running one is flagged, and subscribers get a ``cancel``
  event so the worker's step callback stops it.
* :meth:`~JobSource.media_due` lists only terminal tasks, and only once their links have expired
  plus the grace; the row itself stays (polls still answer), marked by :meth:`~JobSource.media_deleted`.
* Ownership: a task row keeps the digest of the key that submitted it (``key_hash``) and an upload
  the digest of the key that uploaded it; :class:`TaskRecord` and :class:`Upload` carry it as
  ``owner`` (the API answers another key as if the id did not exist). Rows written before
  ownership have no owner and are served to no key.
* :meth:`~JobSource.subscribe` delivers :class:`TaskEvent` (queued, progress, state, cancel) to
  listeners in this process; the PostgreSQL adapter fans them out to every process with NOTIFY.
* Each task waits in the queue of its capability (:func:`wanflash.jobs.capabilities.task_queue`);
  :meth:`~JobSource.claim` with ``queues`` takes only from those (priority, then FIFO, across them).
* Workers publish what they serve (:meth:`~JobSource.publish_worker`); :meth:`~JobSource.workers`
  lists the records seen within :data:`~wanflash.jobs.capabilities.KNOWN_WORKER_SECONDS`, and a
  record counts as live until its ``expires`` (the publisher's ttl, or its withdrawal).

All methods are synchronous and short; async callers run them in a thread
(:mod:`wanflash.jobs.service`, the supervisor), except the point reads of an adapter with
``inline_reads``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from wanflash.jobs.capabilities import WorkerCapabilities, WorkerRecord
from wanflash.jobs.model import JobSpec, OutputRecord, TaskState, load_results

if TYPE_CHECKING:
    from wanflash.config import JobsConfig

log = logging.getLogger(__name__)

TERMINAL_STATES = (TaskState.SUCCEEDED.value, TaskState.FAILED.value, TaskState.CANCELLED.value)
MIN_TTL_SECONDS = 60  # the shortest ttl the API accepts


def media_due_bound(now: float, *, default_ttl: int, grace: float) -> float:
    """A ``finished`` bound every task due in :meth:`JobSource.media_due` satisfies (no link lives
    shorter than the shortest ttl), so the query walks the index instead of evaluating each task's
    ttl across the whole table."""
    return now - grace - min(MIN_TTL_SECONDS, default_ttl)


class DuplicateTask(Exception):
    """A task with this ``taskUUID`` already exists."""


class InFlightExceeded(Exception):
    """The submitting key already has ``max_in_flight`` tasks queued or running."""

    def __init__(self, in_flight: int) -> None:
        super().__init__(in_flight)
        self.in_flight = in_flight


@dataclass(frozen=True)
class InsertRequest:
    """One submission for :meth:`JobSource.insert_many`."""

    spec: JobSpec
    key_hash: str | None = None
    max_in_flight: int | None = None
    priority: int = 0


@dataclass(frozen=True)
class Claim:
    """A lease on one task: ``attempt`` fences every later write."""

    task_uuid: str
    attempt: int
    spec: JobSpec
    created: float  # when the task was submitted (the queue-wait metric)


@dataclass(frozen=True)
class TaskRecord:
    task_uuid: str
    spec: JobSpec
    state: TaskState
    attempt: int
    progress_step: int
    progress_total: int
    progress_stage: str | None
    cancel_requested: bool
    results: list[OutputRecord] | None
    error_code: str | None
    error_message: str | None
    created: float
    finished: float | None
    priority: int = 0
    #: The API key that submitted it (its SHA-256 digest, the ``key_hash`` column); None for rows
    #: written without a key (before ownership existed, or by in-process callers): no key owns those.
    owner: str | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """One webhook POST to make: ``msg_id`` is the ``webhook-id`` header, ``body`` the exact bytes."""

    msg_id: str
    url: str
    body: bytes
    expires_at: float
    attempts: int = 0
    task_uuid: str = ""


OutboxRenderer = Callable[[TaskRecord], list[OutboxMessage]]


class NoTerminalWrites(RuntimeError):
    """A process opened without a webhook renderer tried to end a task."""


def refuse_terminal_writes(record: TaskRecord) -> list[OutboxMessage]:
    """The :data:`OutboxRenderer` of a process that never ends a task (key administration, migrations):
    a terminal transition there raises, rolling the transition back, instead of queueing no webhook."""
    raise NoTerminalWrites(f"task {record.task_uuid}: this process may not end tasks (it renders no webhooks)")


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    created: float
    revoked: float | None


@dataclass(frozen=True)
class Upload:
    upload_uuid: str
    kind: str
    key: str
    content_type: str
    owner: str | None = None  # as TaskRecord.owner: the uploading key's digest, None for legacy rows


EventKind = Literal["queued", "progress", "state", "cancel"]


@dataclass(frozen=True)
class TaskEvent:
    """A change worth telling listeners about: a task became claimable, made progress, reached a
    state, or was asked to stop. Small on purpose (it travels in a NOTIFY payload)."""

    kind: EventKind
    task_uuid: str
    state: str | None = None
    step: int = 0
    total: int = 0
    stage: str | None = None

    def to_json(self) -> str:
        return json.dumps({"k": self.kind, "t": self.task_uuid, "s": self.state, "n": self.step, "of": self.total,
                           "st": self.stage}, separators=(",", ":"))

    @classmethod
    def from_json(cls, payload: str) -> TaskEvent:
        d = json.loads(payload)
        return cls(d["k"], d["t"], d.get("s"), d.get("n", 0), d.get("of", 0), d.get("st"))


Listener = Callable[[TaskEvent], None]


class Submissions(Protocol):
    """The API's side of the task table: submit, poll, cancel, count. ``now`` parameters exist for
    tests; production passes nothing (wall clock)."""

    #: True where a point read (``get``, ``in_flight``, ``get_upload``, ``key_hash_active``) is a local
    #: index lookup that never waits on I/O or on a writer, so async callers may run it on the event
    #: loop instead of paying a thread hop (SQLite in WAL mode); False where it is a network round trip
    #: (PostgreSQL). ``counts`` scans the table and always runs in a thread.
    inline_reads: bool

    def insert_many(self, requests: list[InsertRequest], *, now: float | None = None
                    ) -> list[DuplicateTask | InFlightExceeded | None]:
        """Insert each request in one transaction (group commit): the refusal each met (a duplicate
        ``taskUUID``, or its key's ``max_in_flight`` reached), or None when inserted. The adapters'
        single ``insert``, which raises the refusal, is a plain method for tests, in no role."""
        ...

    def in_flight(self, key_hash: str) -> int: ...

    def get(self, task_uuid: str) -> TaskRecord | None: ...

    def request_cancel(self, task_uuid: str, *, now: float | None = None) -> bool: ...

    def counts(self) -> dict[str, int]: ...


class Leases(Protocol):
    """The worker's side: claim a task and write its progress and outcome, fenced by ``attempt``."""

    max_attempts: int

    def claim(self, owner: str, lease_seconds: float, *, now: float | None = None,
              queues: Sequence[str] | None = None) -> Claim | None:
        """Lease the next task (priority, then FIFO) from ``queues`` (None: from any queue), after
        expiring stale leases (the adapters' ``expire_leases``, a plain method in no role)."""
        ...

    def worker_started(self, *, sole: bool = True) -> None: ...

    def heartbeat(self, task_uuid: str, attempt: int, lease_seconds: float, *, now: float | None = None) -> bool: ...

    def cancel_requested(self, task_uuid: str) -> bool: ...

    def progress(self, task_uuid: str, attempt: int, step: int, total: int, stage: str) -> bool: ...

    def complete(self, task_uuid: str, attempt: int, results: Sequence[OutputRecord], *,
                 now: float | None = None) -> bool: ...

    def fail(self, task_uuid: str, attempt: int, code: str, message: str, *, retryable: bool = False,
             now: float | None = None) -> bool: ...

    def cancelled(self, task_uuid: str, attempt: int, *, now: float | None = None) -> bool: ...


class Events(Protocol):
    """Task events (:class:`TaskEvent`) for listeners in this process (every process, on PostgreSQL)."""

    def subscribe(self, listener: Listener) -> Callable[[], None]: ...


class WorkerRegistry(Protocol):
    """What the live workers serve (:mod:`wanflash.jobs.capabilities`)."""

    def publish_worker(self, worker_id: str, caps: WorkerCapabilities, ttl_seconds: float, *,
                       now: float | None = None) -> None:
        """Record or refresh a worker: it counts as live until ``now + ttl_seconds``. Also forgets
        workers not seen for :data:`~wanflash.jobs.capabilities.KNOWN_WORKER_SECONDS`."""
        ...

    def withdraw_worker(self, worker_id: str, *, now: float | None = None) -> None:
        """The worker stopped: it is no longer live (its record stays, as last-known capabilities)."""
        ...

    def workers(self, *, now: float | None = None) -> list[WorkerRecord]:
        """Workers seen within :data:`~wanflash.jobs.capabilities.KNOWN_WORKER_SECONDS`, latest first."""
        ...


class Outbox(Protocol):
    """The webhook outbox the delivery loop drains. Rows are written by the adapter's renderer (a
    required constructor argument) inside each terminal transition's transaction."""

    def lease_outbox(self, lease_seconds: float, limit: int = 16, *,
                     now: float | None = None) -> list[OutboxMessage]: ...

    def outbox_result(self, msg_id: str, *, state: str, attempts: int, next_at: float | None = None,
                      status: int | None = None, error: str | None = None) -> None: ...


class KeyStore(Protocol):
    """API keys, stored as SHA-256 digests only."""

    inline_reads: bool

    def add_key(self, key_id: str, key_hash: str, *, now: float | None = None) -> None: ...

    def key_hash_active(self, key_hash: str) -> bool: ...

    def list_keys(self) -> list[ApiKeyRow]: ...

    def revoke_key(self, key_id: str, *, now: float | None = None) -> bool: ...

    def active_key_count(self) -> int: ...


class UploadStore(Protocol):
    """The upload index the API resolves ``imageUpload`` UUIDs through."""

    inline_reads: bool

    def add_upload(self, upload_uuid: str, kind: str, key: str, content_type: str, *,
                   now: float | None = None, owner: str | None = None) -> None:
        """Index an upload; ``owner`` is the uploading key's digest (only that key may use the UUID)."""
        ...

    def get_upload(self, upload_uuid: str) -> Upload | None: ...

    def touch_upload(self, upload_uuid: str, *, now: float | None = None) -> None:
        """Record a use of the upload (a task referenced it): its retention counts from the last use."""
        ...


class MediaRetention(Protocol):
    """What the retention sweeper (:mod:`wanflash.delivery.retention`) finds due and marks gone."""

    def media_due(self, now: float, *, default_ttl: int, grace: float, limit: int = 200) -> list[TaskRecord]:
        """Finished tasks whose links expired (``finished`` + the spec's ``ttl``, else ``default_ttl``)
        at least ``grace`` seconds before ``now``, whose media is not yet marked deleted; oldest first."""
        ...

    def media_deleted(self, task_uuid: str, *, now: float | None = None) -> None:
        """Mark the task's stored inputs and outputs as deleted (it leaves :meth:`media_due`)."""
        ...

    def uploads_due(self, before: float, *, limit: int = 200) -> list[Upload]:
        """Uploads last used (or, never used, created) at or before ``before``; oldest first."""
        ...

    def delete_upload(self, upload_uuid: str) -> None:
        """Forget the upload: its UUID no longer resolves."""
        ...


class JobSource(Submissions, Leases, Events, WorkerRegistry, Outbox, KeyStore, UploadStore, MediaRetention,
                Protocol):
    """Every role together: what an adapter implements and what the composition root opens. Consumers
    take only the role(s) they use."""

    def close(self) -> None: ...


class Listeners:
    """In-process fan-out of :class:`TaskEvent`; a failing listener never breaks the writer."""

    def __init__(self) -> None:
        self._items: list[Listener] = []

    def add(self, listener: Listener) -> Callable[[], None]:
        self._items.append(listener)
        return lambda: self._items.remove(listener) if listener in self._items else None

    def emit(self, event: TaskEvent) -> None:
        for fn in list(self._items):
            try:
                fn(event)
            except Exception:  # a listener's bug must not undo a committed transition
                log.exception("task event listener failed")


class Row(Protocol):
    """A database row read by column name: ``sqlite3.Row`` and psycopg's dict rows alike."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Any: ...


def upload_from_row(row: Row) -> Upload:
    """An ``uploads`` row (either adapter) as an :class:`Upload`."""
    return Upload(row["upload_uuid"], row["kind"], row["key"], row["content_type"],
                  row["key_hash"] if "key_hash" in row.keys() else None)  # noqa: SIM118 - sqlite3.Row


def worker_from_row(row: Row) -> WorkerRecord:
    """A ``workers`` row (either adapter) as a :class:`WorkerRecord`."""
    return WorkerRecord(row["worker_id"], WorkerCapabilities.model_validate_json(row["caps"]), row["seen"],
                        row["expires"])


def record_from_row(row: Row) -> TaskRecord:
    """A task row (SQLite ``Row`` or a psycopg dict row; same column names) as a :class:`TaskRecord`."""
    return TaskRecord(
        task_uuid=row["task_uuid"],
        spec=JobSpec.model_validate_json(row["spec"]),
        state=TaskState(row["state"]),
        attempt=row["attempt"],
        progress_step=row["progress_step"],
        progress_total=row["progress_total"],
        progress_stage=row["progress_stage"],
        cancel_requested=bool(row["cancel_requested"]),
        results=load_results(row["results"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        created=row["created"],
        finished=row["finished"],
        priority=row["priority"],
        owner=row["key_hash"] if "key_hash" in row.keys() else None,  # noqa: SIM118 - sqlite3.Row: `in` is values
    )


def db_path(data_dir: Path) -> Path:
    """The embedded SQLite job store's file under the data directory."""
    return Path(data_dir) / "wanflash.sqlite3"


def open_job_source(config: JobsConfig, *, outbox: OutboxRenderer, sqlite_path: Path | None = None) -> JobSource:
    """The adapter the settings ask for: PostgreSQL when ``database_url`` is set, else the SQLite file
    at ``sqlite_path``. ``outbox`` renders each terminal task's webhook messages
    (:func:`wanflash.delivery.outbox.make_renderer`, or :func:`refuse_terminal_writes`)."""
    if config.database_url:
        from wanflash.jobs.postgres import PostgresJobSource

        return PostgresJobSource(config.database_url, outbox=outbox, max_attempts=config.max_attempts,
                                 worker_heartbeat_seconds=config.heartbeat_seconds,
                                 stalled_worker_seconds=config.lease_seconds)
    from wanflash.jobs.store import SqliteJobSource

    if sqlite_path is None:
        raise ValueError("no WANFLASH_DATABASE_URL and no SQLite path: nothing to open")
    return SqliteJobSource(sqlite_path, outbox=outbox, max_attempts=config.max_attempts)

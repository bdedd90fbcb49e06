"""The embedded task table: one SQLite file that is both the queue and the source of truth.

Guarantees:

* ``taskUUID`` is the primary key, so a task exists at most once; :meth:`SqliteJobSource.insert`
  raises :class:`DuplicateTask` for a reused id.
* The database runs in WAL mode with ``synchronous=FULL``: a task acknowledged to a client
  survives a crash or power cut of this process.
* A worker owns a running task through a *lease* (``lease_owner``, ``lease_until``) and an
  *attempt* number that :meth:`SqliteJobSource.claim` increments. Every worker write (heartbeat,
  progress, completion, failure) is fenced by ``(task_uuid, attempt, state='running')``: a
  worker whose lease expired and was taken over writes nothing and gets ``False`` back.
* An expired lease re-queues the task while ``attempt < max_attempts``; after that the task
  fails with ``workerLost``. Claims take the highest ``priority`` first, then FIFO by creation time.
* Each task carries its capability queue (``queue``, from :func:`~wanflash.jobs.capabilities.task_queue`);
  a claim with ``queues`` takes only from those. Workers publish their capabilities into
  ``workers``; the embedded (sole) worker's start expires every earlier record, since it alone
  serves this file.
* Listeners (:meth:`SqliteJobSource.subscribe`) get a :class:`~wanflash.jobs.source.TaskEvent` after each
  commit that queues, progresses, ends or flags a task for cancellation (in this process only:
  one embedded process owns the file).

This is the embedded adapter of :class:`wanflash.jobs.source.JobSource`; the shared record types
live there and are re-exported here.

* **Webhook outbox**: every transition to a terminal state (``succeeded``, ``failed``,
  ``cancelled``, including ``workerLost`` from lease expiry) writes the task's webhook messages
  into ``outbox`` *in the same transaction* (rendered by the ``outbox`` callable, a required
  constructor argument, so no process can forget it and drop webhooks), so a crash can lose neither the state nor its
  notification, and a fenced-out (stale) attempt writes no messages. Each row carries its
  ``webhook-id`` (stable across retries and restarts) and the exact body bytes; a delivery
  loop (:mod:`wanflash.delivery.outbox`) leases rows and records every attempt.

* **Concurrency**: writes go through one connection under a lock, each transaction ending in an
  fsync; :meth:`SqliteJobSource.insert_many` commits many submissions in ONE transaction (group commit:
  one fsync for a burst of submits, see :class:`wanflash.jobs.service.JobService`). Reads use a
  connection per thread and no lock: in WAL mode a reader sees the last committed state and never
  waits for a writer's fsync, so polls are not queued behind commits.

The same file holds API key hashes and the upload index (``imageUUID``/``mediaUUID`` to
storage key), because one embedded process owns all of it. Every method is synchronous and
short; async callers go through :mod:`wanflash.jobs.service`, which runs the writes in a thread
and the point reads (``inline_reads``) on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wanflash.jobs.capabilities import KNOWN_WORKER_SECONDS, WorkerCapabilities, WorkerRecord, task_queue
from wanflash.jobs.model import JobSpec, OutputRecord, TaskState, dump_results
from wanflash.jobs.source import (
    TERMINAL_STATES,
    ApiKeyRow,
    Claim,
    DuplicateTask,
    InFlightExceeded,
    InsertRequest,
    Listener,
    Listeners,
    OutboxMessage,
    OutboxRenderer,
    TaskEvent,
    TaskRecord,
    Upload,
    media_due_bound,
    record_from_row,
    upload_from_row,
    worker_from_row,
)

__all__ = ["ApiKeyRow", "Claim", "DuplicateTask", "InFlightExceeded", "InsertRequest", "OutboxMessage",
           "OutboxRenderer", "SqliteJobSource", "TaskRecord", "Upload"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_uuid        TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      REAL,
    progress_step    INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    progress_stage   TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    results          TEXT,
    error_code       TEXT,
    error_message    TEXT,
    created          REAL NOT NULL,
    started          REAL,
    finished         REAL
);
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (state, created);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id  TEXT PRIMARY KEY,
    hash    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS outbox (
    msg_id       TEXT PRIMARY KEY,
    task_uuid    TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         BLOB NOT NULL,
    expires_at   REAL NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    lease_until  REAL,
    last_status  INTEGER,
    last_error   TEXT,
    created      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
CREATE TABLE IF NOT EXISTS uploads (
    upload_uuid  TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created      REAL NOT NULL
);
"""


class SqliteJobSource:
    """SQLite-backed task table. Thread-safe: one connection, serialized by a lock."""

    # A read is a B-tree lookup in pages the OS has cached (tens of microseconds) on this thread's
    # own WAL reader, which never waits for the writer's fsync: cheaper than the thread hop.
    inline_reads = True

    def __init__(self, path: Path, *, outbox: OutboxRenderer, max_attempts: int = 2) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's read connection
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # isolation_level=None: autocommit; multi-statement changes use explicit BEGIN IMMEDIATE.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._migrate_ownership()
        self._migrate_capabilities()
        self._render = outbox
        self._listeners = Listeners()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after each committed event (from the writing thread); returns an unsubscribe."""
        return self._listeners.add(listener)

    def _emit(self, db: sqlite3.Connection, task_uuid: str, now: float) -> None:
        """Queue the terminal task's webhook messages; runs inside the transition's transaction."""
        row = db.execute("SELECT * FROM tasks WHERE task_uuid=?", (task_uuid,)).fetchone()
        for m in self._render(record_from_row(row)):
            # OR IGNORE: a message id is written once; terminal states never change anyway.
            db.execute("INSERT OR IGNORE INTO outbox (msg_id, task_uuid, url, body, expires_at, next_at, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (m.msg_id, task_uuid, m.url, m.body, m.expires_at, now, now))

    def _migrate(self) -> None:
        # Additive columns for databases made by earlier versions (CREATE TABLE IF NOT EXISTS keeps old tables).
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(tasks)").fetchall()}
        if "key_hash" not in cols:
            self._db.execute("ALTER TABLE tasks ADD COLUMN key_hash TEXT")
        if "priority" not in cols:
            self._db.execute("ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
        self._db.execute("CREATE INDEX IF NOT EXISTS tasks_claim_priority ON tasks (state, priority DESC, created)")
        self._db.execute("CREATE INDEX IF NOT EXISTS tasks_key_state ON tasks (key_hash, state)")
        if "media_deleted" not in cols:
            self._db.execute("ALTER TABLE tasks ADD COLUMN media_deleted REAL")
        self._db.execute("CREATE INDEX IF NOT EXISTS tasks_media_due ON tasks (finished) WHERE media_deleted IS NULL")
        if "last_used" not in {r["name"] for r in self._db.execute("PRAGMA table_info(uploads)").fetchall()}:
            self._db.execute("ALTER TABLE uploads ADD COLUMN last_used REAL")
        self._db.execute("CREATE INDEX IF NOT EXISTS uploads_last_use ON uploads (COALESCE(last_used, created))")

    def _migrate_ownership(self) -> None:
        # Uploads belong to the key that made them (tasks already keep theirs in key_hash). Rows from
        # before this step keep NULL: no key owns them, so they are served to no one, and the upload
        # retention sweep deletes them on its usual clock.
        if "key_hash" not in {r["name"] for r in self._db.execute("PRAGMA table_info(uploads)").fetchall()}:
            self._db.execute("ALTER TABLE uploads ADD COLUMN key_hash TEXT")

    def _migrate_capabilities(self) -> None:
        # Its own additive step: the capability queue of each task, and the workers' published records.
        self._db.execute("CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, caps TEXT NOT NULL, "
                         "seen REAL NOT NULL, expires REAL NOT NULL)")
        if "queue" not in {r["name"] for r in self._db.execute("PRAGMA table_info(tasks)").fetchall()}:
            self._db.execute("ALTER TABLE tasks ADD COLUMN queue TEXT")
        # Tasks written before queues existed (only waiting or running ones can be claimed again).
        for row in self._db.execute("SELECT task_uuid, spec FROM tasks WHERE queue IS NULL "
                                    "AND state IN ('queued','running')").fetchall():
            self._db.execute("UPDATE tasks SET queue=? WHERE task_uuid=?",
                             (task_queue(JobSpec.model_validate_json(row["spec"])), row["task_uuid"]))
        self._db.execute("CREATE INDEX IF NOT EXISTS tasks_claim_queue ON tasks (state, queue, priority DESC, created)")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (WAL: sees the last commit, never waits for a writer)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            with self._readers_lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA busy_timeout=30000")
                db.execute("PRAGMA query_only=1")
                self._readers.append(db)
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        return self._reader().execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._reader().execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    # -- tasks: API side

    def insert(self, spec: JobSpec, *, now: float | None = None, key_hash: str | None = None,
               max_in_flight: int | None = None, priority: int = 0) -> None:
        """Persist a queued task. Raises :class:`DuplicateTask` if the taskUUID exists.

        With ``key_hash`` and ``max_in_flight`` the key's queued+running count is checked and the
        row inserted in one ``BEGIN IMMEDIATE`` transaction, so concurrent submits (from any number
        of API processes) can never push a key above the cap; :class:`InFlightExceeded` otherwise.
        Counting rows, not an in-memory counter, keeps the cap right across restarts.
        """
        (error,) = self.insert_many([InsertRequest(spec, key_hash, max_in_flight, priority)], now=now)
        if error is not None:
            raise error

    def insert_many(self, requests: list[InsertRequest], *, now: float | None = None
                    ) -> list[DuplicateTask | InFlightExceeded | None]:
        """Persist several queued tasks in ONE transaction (one fsync), in order.

        Each request stands alone, with :meth:`insert`'s checks: the result holds ``None`` (inserted)
        or the :class:`DuplicateTask`/:class:`InFlightExceeded` it met, and a refused request
        writes nothing. The cap counts earlier requests of the same batch. Any other error (I/O)
        rolls the whole batch back and is raised: then no request was inserted.
        """
        t = time.time() if now is None else now
        out: list[DuplicateTask | InFlightExceeded | None] = []
        with self._tx() as db:
            for r in requests:
                if r.key_hash is not None and r.max_in_flight is not None:
                    n = db.execute("SELECT COUNT(*) FROM tasks WHERE key_hash=? AND state IN ('queued','running')",
                                   (r.key_hash,)).fetchone()[0]
                    if n >= r.max_in_flight:
                        out.append(InFlightExceeded(int(n)))
                        continue
                try:
                    # One statement: a constraint failure undoes only this row, not the batch.
                    db.execute(
                        "INSERT INTO tasks (task_uuid, spec, state, max_attempts, created, key_hash, priority, queue) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.spec.task_uuid, r.spec.model_dump_json(), TaskState.QUEUED.value, self.max_attempts,
                         t, r.key_hash, r.priority, task_queue(r.spec)),
                    )
                except sqlite3.IntegrityError:
                    out.append(DuplicateTask(r.spec.task_uuid))
                    continue
                out.append(None)
        for r, res in zip(requests, out):
            if res is None:
                self._listeners.emit(TaskEvent("queued", r.spec.task_uuid, TaskState.QUEUED.value))
        return out

    def in_flight(self, key_hash: str) -> int:
        """Tasks of this key that are queued or running."""
        row = self._one("SELECT COUNT(*) AS n FROM tasks WHERE key_hash=? AND state IN ('queued','running')",
                        (key_hash,))
        return int(row["n"]) if row else 0

    def get(self, task_uuid: str) -> TaskRecord | None:
        row = self._one("SELECT * FROM tasks WHERE task_uuid = ?", (task_uuid,))
        return None if row is None else record_from_row(row)

    def request_cancel(self, task_uuid: str, *, now: float | None = None) -> bool:
        """Cancel a queued task at once; flag a running one (its step callback stops it)."""
        t = time.time() if now is None else now
        with self._tx() as db:
            n = db.execute(
                "UPDATE tasks SET state='cancelled', finished=?, error_code='taskCancelled', "
                "error_message='The task was cancelled.' WHERE task_uuid=? AND state='queued'",
                (t, task_uuid),
            ).rowcount
            if n:
                self._emit(db, task_uuid, t)
            flagged = db.execute(
                "UPDATE tasks SET cancel_requested=1 WHERE task_uuid=? AND state='running'", (task_uuid,)
            ).rowcount
        if n:
            self._listeners.emit(TaskEvent("state", task_uuid, TaskState.CANCELLED.value))
        if flagged:
            self._listeners.emit(TaskEvent("cancel", task_uuid, TaskState.RUNNING.value))
        return n + flagged > 0

    def counts(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def media_due(self, now: float, *, default_ttl: int, grace: float, limit: int = 200) -> list[TaskRecord]:
        rows = self._all(
            "SELECT * FROM tasks WHERE media_deleted IS NULL AND finished <= :bound "
            "AND state IN (:s0, :s1, :s2) "
            "AND finished + COALESCE(json_extract(spec, '$.ttl'), :ttl) + :grace <= :now "
            "ORDER BY finished LIMIT :limit",
            {"bound": media_due_bound(now, default_ttl=default_ttl, grace=grace), "s0": TERMINAL_STATES[0],
             "s1": TERMINAL_STATES[1], "s2": TERMINAL_STATES[2], "ttl": default_ttl, "grace": grace, "now": now,
             "limit": limit})
        return [record_from_row(r) for r in rows]

    def media_deleted(self, task_uuid: str, *, now: float | None = None) -> None:
        self._write("UPDATE tasks SET media_deleted=? WHERE task_uuid=?",
                    (time.time() if now is None else now, task_uuid))

    # -- tasks: worker side (every write fenced by attempt)

    def expire_leases(self, *, now: float | None = None) -> int:
        """Re-queue running tasks whose lease ran out, or fail them once attempts are used up."""
        t = time.time() if now is None else now
        with self._tx() as db:
            requeued = db.execute(
                "UPDATE tasks SET state='queued', lease_owner=NULL, lease_until=NULL "
                "WHERE state='running' AND lease_until < ? AND attempt < max_attempts RETURNING task_uuid",
                (t,),
            ).fetchall()
            lost = db.execute(
                "UPDATE tasks SET state='failed', lease_owner=NULL, lease_until=NULL, finished=?, "
                "error_code='workerLost', error_message='The worker running this task stopped responding.' "
                "WHERE state='running' AND lease_until < ? AND attempt >= max_attempts RETURNING task_uuid",
                (t, t),
            ).fetchall()
            for r in lost:
                self._emit(db, r["task_uuid"], t)
        for r in requeued:
            self._listeners.emit(TaskEvent("queued", r["task_uuid"], TaskState.QUEUED.value))
        for r in lost:
            self._listeners.emit(TaskEvent("state", r["task_uuid"], TaskState.FAILED.value))
        return len(requeued) + len(lost)

    def release_all_leases(self) -> int:
        """At start-up of the single embedded worker every running row is an orphan: expire it now."""
        return self._write("UPDATE tasks SET lease_until = 0 WHERE state='running'")

    def worker_started(self, *, sole: bool = True) -> None:
        """The embedded process has exactly one worker: rows left 'running' by a previous process are
        orphans, and so are the worker records a previous process published (they stay as last-known
        capabilities, not live). Beside other workers (``sole=False``, a worker group) they are not;
        their leases and records expire."""
        if sole:
            self.release_all_leases()
            self._write("UPDATE workers SET expires=MIN(expires, ?)", (time.time(),))

    def claim(self, owner: str, lease_seconds: float, *, now: float | None = None,
              queues: Sequence[str] | None = None) -> Claim | None:
        """Take the highest-priority, then oldest, queued task of ``queues`` (None: any) after expiring
        stale leases, and lease it to ``owner``."""
        t = time.time() if now is None else now
        self.expire_leases(now=t)
        where, params = "", tuple[str, ...]()
        if queues is not None:
            params = tuple(queues)
            where = f" AND queue IN ({','.join('?' * len(params))})"
        with self._tx() as db:
            row = db.execute(
                "UPDATE tasks SET state='running', attempt=attempt+1, lease_owner=?, lease_until=?, "
                "started=?, progress_step=0, progress_total=0, progress_stage=NULL "
                f"WHERE task_uuid = (SELECT task_uuid FROM tasks WHERE state='queued'{where} "
                "                   ORDER BY priority DESC, created, rowid LIMIT 1) "
                "RETURNING task_uuid, attempt, spec, created",
                (owner, t + lease_seconds, t, *params),
            ).fetchone()
        if row is None:
            return None
        return Claim(row["task_uuid"], row["attempt"], JobSpec.model_validate_json(row["spec"]), row["created"])

    def heartbeat(self, task_uuid: str, attempt: int, lease_seconds: float, *, now: float | None = None) -> bool:
        """Extend the lease. ``False``: the lease was lost (stop and write nothing)."""
        t = time.time() if now is None else now
        return self._write(
            "UPDATE tasks SET lease_until=? WHERE task_uuid=? AND attempt=? AND state='running'",
            (t + lease_seconds, task_uuid, attempt),
        ) == 1

    def cancel_requested(self, task_uuid: str) -> bool:
        row = self._one("SELECT cancel_requested FROM tasks WHERE task_uuid=?", (task_uuid,))
        return bool(row and row["cancel_requested"])

    def progress(self, task_uuid: str, attempt: int, step: int, total: int, stage: str) -> bool:
        ok = self._write(
            "UPDATE tasks SET progress_step=?, progress_total=?, progress_stage=? "
            "WHERE task_uuid=? AND attempt=? AND state='running'",
            (step, total, stage, task_uuid, attempt),
        ) == 1
        if ok:
            self._listeners.emit(TaskEvent("progress", task_uuid, TaskState.RUNNING.value, step, total, stage))
        return ok

    def complete(self, task_uuid: str, attempt: int, results: Sequence[OutputRecord], *,
                 now: float | None = None) -> bool:
        """Record success. ``False`` when ``attempt`` is stale: nothing is written."""
        t = time.time() if now is None else now
        with self._tx() as db:
            ok = db.execute(
                "UPDATE tasks SET state='succeeded', results=?, finished=?, lease_owner=NULL, lease_until=NULL "
                "WHERE task_uuid=? AND attempt=? AND state='running'",
                (dump_results(results), t, task_uuid, attempt),
            ).rowcount == 1
            if ok:
                self._emit(db, task_uuid, t)
        if ok:
            self._listeners.emit(TaskEvent("state", task_uuid, TaskState.SUCCEEDED.value))
        return ok

    def fail(self, task_uuid: str, attempt: int, code: str, message: str, *, retryable: bool = False,
             now: float | None = None) -> bool:
        """Record a failure; a retryable one re-queues while attempts remain. Fenced like complete."""
        t = time.time() if now is None else now
        requeued = ok = False
        with self._tx() as db:
            if retryable:
                n = db.execute(
                    "UPDATE tasks SET state='queued', lease_owner=NULL, lease_until=NULL, "
                    "error_code=?, error_message=? "
                    "WHERE task_uuid=? AND attempt=? AND state='running' AND attempt < max_attempts",
                    (code, message, task_uuid, attempt),
                ).rowcount
                if n:
                    requeued = True
            if not requeued:
                ok = db.execute(
                    "UPDATE tasks SET state='failed', finished=?, error_code=?, error_message=?, "
                    "lease_owner=NULL, lease_until=NULL WHERE task_uuid=? AND attempt=? AND state='running'",
                    (t, code, message, task_uuid, attempt),
                ).rowcount == 1
                if ok:
                    self._emit(db, task_uuid, t)
        if requeued:
            self._listeners.emit(TaskEvent("queued", task_uuid, TaskState.QUEUED.value))
        elif ok:
            self._listeners.emit(TaskEvent("state", task_uuid, TaskState.FAILED.value))
        return requeued or ok

    def cancelled(self, task_uuid: str, attempt: int, *, now: float | None = None) -> bool:
        t = time.time() if now is None else now
        with self._tx() as db:
            ok = db.execute(
                "UPDATE tasks SET state='cancelled', finished=?, error_code='taskCancelled', "
                "error_message='The task was cancelled.', lease_owner=NULL, lease_until=NULL "
                "WHERE task_uuid=? AND attempt=? AND state='running'",
                (t, task_uuid, attempt),
            ).rowcount == 1
            if ok:
                self._emit(db, task_uuid, t)
        if ok:
            self._listeners.emit(TaskEvent("state", task_uuid, TaskState.CANCELLED.value))
        return ok

    # -- worker capabilities

    def publish_worker(self, worker_id: str, caps: WorkerCapabilities, ttl_seconds: float, *,
                       now: float | None = None) -> None:
        t = time.time() if now is None else now
        with self._tx() as db:
            db.execute("INSERT INTO workers (worker_id, caps, seen, expires) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (worker_id) DO UPDATE SET caps=excluded.caps, seen=excluded.seen, "
                       "expires=excluded.expires", (worker_id, caps.model_dump_json(), t, t + ttl_seconds))
            db.execute("DELETE FROM workers WHERE seen < ?", (t - KNOWN_WORKER_SECONDS,))

    def withdraw_worker(self, worker_id: str, *, now: float | None = None) -> None:
        self._write("UPDATE workers SET expires=MIN(expires, ?) WHERE worker_id=?",
                    (time.time() if now is None else now, worker_id))

    def workers(self, *, now: float | None = None) -> list[WorkerRecord]:
        t = time.time() if now is None else now
        rows = self._all("SELECT * FROM workers WHERE seen >= ? ORDER BY seen DESC, worker_id",
                         (t - KNOWN_WORKER_SECONDS,))
        return [worker_from_row(r) for r in rows]

    # -- webhook outbox

    def lease_outbox(self, lease_seconds: float, limit: int = 16, *, now: float | None = None) -> list[OutboxMessage]:
        """Due pending messages, leased so a concurrent loop (or this one after a crash) skips them."""
        t = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "UPDATE outbox SET lease_until=? WHERE msg_id IN (SELECT msg_id FROM outbox WHERE state='pending' "
                "AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?) "
                "RETURNING msg_id, task_uuid, url, body, expires_at, attempts",
                (t + lease_seconds, t, t, limit),
            ).fetchall()
        return [OutboxMessage(r["msg_id"], r["url"], bytes(r["body"]), r["expires_at"], r["attempts"], r["task_uuid"])
                for r in rows]

    def outbox_result(self, msg_id: str, *, state: str, attempts: int, next_at: float | None = None,
                      status: int | None = None, error: str | None = None) -> None:
        """Record an attempt: ``state`` 'pending' (retry at ``next_at``) or a final outcome."""
        self._write("UPDATE outbox SET state=?, attempts=?, next_at=COALESCE(?, next_at), lease_until=NULL, "
                    "last_status=?, last_error=? WHERE msg_id=?", (state, attempts, next_at, status, error, msg_id))

    def outbox_rows(self, task_uuid: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows, for tests and operators (a plain method, in no role)."""
        if task_uuid is None:
            rows = self._all("SELECT * FROM outbox ORDER BY created, msg_id")
        else:
            rows = self._all("SELECT * FROM outbox WHERE task_uuid=? ORDER BY msg_id", (task_uuid,))
        return [dict(r) for r in rows]

    # -- API keys (hashes only)

    def add_key(self, key_id: str, key_hash: str, *, now: float | None = None) -> None:
        self._write("INSERT INTO api_keys (key_id, hash, created) VALUES (?, ?, ?)",
                    (key_id, key_hash, time.time() if now is None else now))

    def key_hash_active(self, key_hash: str) -> bool:
        return self._one("SELECT 1 FROM api_keys WHERE hash=? AND revoked IS NULL", (key_hash,)) is not None

    def list_keys(self) -> list[ApiKeyRow]:
        rows = self._all("SELECT key_id, created, revoked FROM api_keys ORDER BY created")
        return [ApiKeyRow(r["key_id"], r["created"], r["revoked"]) for r in rows]

    def revoke_key(self, key_id: str, *, now: float | None = None) -> bool:
        return self._write("UPDATE api_keys SET revoked=? WHERE key_id=? AND revoked IS NULL",
                           (time.time() if now is None else now, key_id)) == 1

    def active_key_count(self) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM api_keys WHERE revoked IS NULL")
        return int(row["n"]) if row else 0

    # -- upload index

    def add_upload(self, upload_uuid: str, kind: str, key: str, content_type: str, *,
                   now: float | None = None, owner: str | None = None) -> None:
        self._write("INSERT INTO uploads (upload_uuid, kind, key, content_type, created, key_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (upload_uuid, kind, key, content_type, time.time() if now is None else now, owner))

    def touch_upload(self, upload_uuid: str, *, now: float | None = None) -> None:
        self._write("UPDATE uploads SET last_used=? WHERE upload_uuid=?",
                    (time.time() if now is None else now, upload_uuid))

    def uploads_due(self, before: float, *, limit: int = 200) -> list[Upload]:
        rows = self._all("SELECT * FROM uploads WHERE COALESCE(last_used, created) <= ? "
                         "ORDER BY COALESCE(last_used, created) LIMIT ?", (before, limit))
        return [upload_from_row(r) for r in rows]

    def delete_upload(self, upload_uuid: str) -> None:
        self._write("DELETE FROM uploads WHERE upload_uuid=?", (upload_uuid,))

    def get_upload(self, upload_uuid: str) -> Upload | None:
        row = self._one("SELECT * FROM uploads WHERE upload_uuid=?", (upload_uuid,))
        if row is None:
            return None
        return upload_from_row(row)


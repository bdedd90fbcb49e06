"""The distributed job source: our task table in PostgreSQL is the truth, procrastinate dispatches.

How the two fit together:

* ``wanflash_tasks`` holds every task (state, attempt, lease, progress, results), exactly as the
  SQLite table does, and every worker write is fenced by ``(task_uuid, attempt, state='running')``.
* A procrastinate job (task name ``wanflash.render``) is a *dispatch token* for one task. It is
  deferred **in the same transaction** that makes the task ``queued`` (procrastinate's
  ``defer_job_async(connection=...)``), with the task's ``priority`` and ``queueing_lock=taskUUID``
  (at most one waiting token per task). Workers take tokens with procrastinate's ``fetch_job``
  (``FOR UPDATE SKIP LOCKED``, priority then FIFO) and then claim the task row; a token whose task
  is no longer waiting (done, cancelled, already re-dispatched) is dropped. The holder drops its
  token after the task's terminal write, so procrastinate's table only holds live tokens.
* Queues per capability: a task's token waits in the procrastinate queue of its capability
  (:func:`~wanflash.jobs.capabilities.task_queue`, stored in ``wanflash_tasks.queue``; see
  :meth:`PostgresJobSource.token_queue`), and a claim with ``queues`` fetches from those only.
  Workers publish what they serve into ``wanflash_workers``.
* Liveness has two layers. Procrastinate's worker heartbeat (``register_worker`` /
  ``update_heartbeat`` every ``worker_heartbeat_seconds``) lets any worker find the tokens of a
  dead process (``get_stalled_jobs``) and ``retry_job`` them, voiding that task's lease at once;
  our per-task lease (heartbeated by the supervisor, ``lease_seconds``) covers a live process
  that stopped heartbeating the task. An expired lease re-queues the task while attempts remain
  (with a fresh token), else fails it with ``workerLost``.
* Cancel: a queued task is cancelled in one transaction (its token deleted); for a running one
  ``cancel_requested`` is set and procrastinate's abort (``cancel_job_by_id(abort=True)``) sends
  its NOTIFY; the holding process turns it into a ``cancel`` :class:`TaskEvent`, which the
  supervisor forwards to the executor and the step callback raises on. The supervisor also polls
  ``cancel_requested`` each heartbeat, in case a notification is lost.
* Progress and state changes are NOTIFYed on ``wanflash_events`` in the writing transaction, so
  listeners in every process (API replicas) see them; the listening connection reconnects.

Every public method is synchronous (the :class:`~wanflash.jobs.source.JobSource` port); the work
runs on one event loop in a background thread (an anyio blocking portal) that owns the psycopg
pool, the LISTEN connection and the worker heartbeat. Clocks: leases use the callers' wall clock
(hosts need NTP, as any lease-based system does); procrastinate's heartbeats use the database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as pexc
from procrastinate.jobs import Job
from procrastinate.manager import get_channel_for_queues
from psycopg import sql as pgsql
from psycopg.rows import dict_row

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

log = logging.getLogger(__name__)

TASK_NAME = "wanflash.render"
DEFAULT_QUEUE = "video"
EVENTS_CHANNEL = "wanflash_events"
_LOCK_NS = 0x57414E  # advisory-lock namespace ("WAN"): migrations and per-key in-flight caps
_MIGRATE_KEY = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS wanflash_tasks (
    task_uuid        TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      DOUBLE PRECISION,
    job_id           BIGINT,
    progress_step    INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    progress_stage   TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    results          TEXT,
    error_code       TEXT,
    error_message    TEXT,
    key_hash         TEXT,
    created          DOUBLE PRECISION NOT NULL,
    started          DOUBLE PRECISION,
    finished         DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS wanflash_tasks_running ON wanflash_tasks (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS wanflash_tasks_key_state ON wanflash_tasks (key_hash, state);
ALTER TABLE wanflash_tasks ADD COLUMN IF NOT EXISTS media_deleted DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS wanflash_tasks_media_due ON wanflash_tasks (finished) WHERE media_deleted IS NULL;
CREATE TABLE IF NOT EXISTS wanflash_api_keys (
    key_id  TEXT PRIMARY KEY,
    hash    TEXT NOT NULL UNIQUE,
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS wanflash_outbox (
    msg_id       TEXT PRIMARY KEY,
    task_uuid    TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         BYTEA NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      DOUBLE PRECISION NOT NULL,
    lease_until  DOUBLE PRECISION,
    last_status  INTEGER,
    last_error   TEXT,
    created      DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS wanflash_outbox_due ON wanflash_outbox (state, next_at);
CREATE TABLE IF NOT EXISTS wanflash_uploads (
    upload_uuid  TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created      DOUBLE PRECISION NOT NULL
);
ALTER TABLE wanflash_uploads ADD COLUMN IF NOT EXISTS last_used DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS wanflash_uploads_last_use ON wanflash_uploads ((COALESCE(last_used, created)));
"""

# A separate migration step (ownership): uploads belong to the key that made them; tasks already keep
# theirs in key_hash. Existing uploads keep NULL, owned by no key (served to no one, swept as usual).
OWNERSHIP_SCHEMA = """
ALTER TABLE wanflash_uploads ADD COLUMN IF NOT EXISTS key_hash TEXT;
"""

# Its own additive step (run after SCHEMA by `wanflash migrate`): each task's capability queue, and
# the workers' published capabilities. Tasks and tokens from before are moved by _migrate_queues.
CAPABILITIES_SCHEMA = """
ALTER TABLE wanflash_tasks ADD COLUMN IF NOT EXISTS queue TEXT;
CREATE TABLE IF NOT EXISTS wanflash_workers (
    worker_id TEXT PRIMARY KEY,
    caps      TEXT NOT NULL,
    seen      DOUBLE PRECISION NOT NULL,
    expires   DOUBLE PRECISION NOT NULL
);
"""
_CHANNEL_MAX = 63  # PostgreSQL identifiers (NOTIFY channels too) are at most NAMEDATALEN - 1 bytes

_CANCELLED = "error_code='taskCancelled', error_message='The task was cancelled.'"


def _queue_of(row: Mapping[str, Any]) -> str:
    """A task row's capability queue (computed from its spec for a row the migration has not seen)."""
    return row["queue"] or task_queue(JobSpec.model_validate_json(row["spec"]))


class PostgresJobSource:
    """:class:`~wanflash.jobs.source.JobSource` on PostgreSQL + procrastinate. Thread-safe."""

    inline_reads = False  # every read is a network round trip

    def __init__(self, url: str, *, outbox: OutboxRenderer, max_attempts: int = 2, queue: str = DEFAULT_QUEUE,
                 worker_heartbeat_seconds: float = 5.0, stalled_worker_seconds: float = 30.0,
                 pool_size: int = 8) -> None:
        self.url = url
        self.max_attempts = max_attempts
        self.queue = queue
        self.worker_heartbeat_seconds = worker_heartbeat_seconds
        self.stalled_worker_seconds = stalled_worker_seconds
        self._render = outbox
        self._listeners = Listeners()
        self._held: dict[tuple[str, int], int] = {}  # (task_uuid, attempt) -> the token this process holds
        self._held_lock = threading.Lock()
        self._worker_id: int | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._side: list[asyncio.Task[None]] = []
        self._listening: asyncio.Event | None = None
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal(name="wanflash-postgres")
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self._open, pool_size)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    # -- plumbing

    def _call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    async def _open(self, pool_size: int) -> None:
        self.connector = procrastinate.PsycopgConnector(conninfo=self.url, min_size=1, max_size=pool_size)
        self.app = procrastinate.App(connector=self.connector)
        await self.app.open_async()
        self.jobs = self.app.job_manager

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.connector.pool.connection() as conn:
            async with conn.transaction():
                yield conn

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        async with self.connector.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self.connector.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def _rowcount(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        async with self.connector.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    @staticmethod
    async def _q(conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        return await cur.fetchall() if cur.description else []

    @staticmethod
    async def _notify(conn: psycopg.AsyncConnection[Any], event: TaskEvent) -> None:
        # Delivered at commit, to every listening process (this one included).
        await conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, event.to_json()))

    def close(self) -> None:
        try:
            self._call(self._close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    async def _close(self) -> None:
        for t in self._side:
            t.cancel()
        for t in self._side:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            with self._held_lock:
                held = list(self._held.items())
                self._held.clear()
            # Leases of tasks this process still runs are void now: the next reaper re-queues them.
            for (tu, attempt), _ in held:
                await self._rowcount("UPDATE wanflash_tasks SET lease_until=0 WHERE task_uuid=%s AND attempt=%s "
                                     "AND state='running'", (tu, attempt))
            if self._worker_id is not None:
                # Its tokens lose their worker (ON DELETE SET NULL), which get_stalled_jobs reports.
                await self.jobs.unregister_worker(self._worker_id)
        await self.app.close_async()

    # -- schema

    def migrate(self) -> None:
        """Create procrastinate's schema and ours; idempotent, and safe to run from several hosts at once."""
        self._call(self._migrate)

    async def _migrate(self) -> None:
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NS, _MIGRATE_KEY))
            cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            row = await cur.fetchone()
            if not (row and row[0]):
                await conn.execute(procrastinate.schema.SchemaManager.get_schema())
            await conn.execute(SCHEMA)
            await conn.execute(OWNERSHIP_SCHEMA)
            await conn.execute(CAPABILITIES_SCHEMA)
            await self._migrate_queues(conn)

    async def _migrate_queues(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give tasks written before capability queues their queue, and move their tokens out of the
        single queue of that time (``self.queue``) into it, so workers that claim by capability see them."""
        for r in await self._q(conn, "SELECT task_uuid, spec FROM wanflash_tasks WHERE queue IS NULL "
                                     "AND state IN ('queued','running')"):
            await conn.execute("UPDATE wanflash_tasks SET queue=%s WHERE task_uuid=%s",
                               (task_queue(JobSpec.model_validate_json(r["spec"])), r["task_uuid"]))
        for r in await self._q(conn, "SELECT j.id, t.queue FROM procrastinate_jobs j JOIN wanflash_tasks t "
                                     "ON t.task_uuid = j.args->>'task_uuid' WHERE j.queue_name=%s "
                                     "AND j.task_name=%s AND j.status IN ('todo','doing') AND t.queue IS NOT NULL",
                               (self.queue, TASK_NAME)):
            await conn.execute("UPDATE procrastinate_jobs SET queue_name=%s WHERE id=%s",
                               (self.token_queue(r["queue"]), r["id"]))

    # -- events

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Listen to every process's events (NOTIFY); returns once LISTEN is active."""
        off = self._listeners.add(listener)
        self._call(self._ensure_listening)
        return off

    async def _ensure_listening(self) -> None:
        if self._listening is None:
            self._listening = asyncio.Event()
            self._side.append(asyncio.create_task(self._listen(self._listening), name="wanflash-listen"))
        await asyncio.wait_for(self._listening.wait(), 30)

    async def _listen(self, ready: asyncio.Event) -> None:
        # Every queue: tokens live in one queue per capability, and an insert in a queue this process
        # does not serve only costs it one empty fetch.
        channels = [EVENTS_CHANNEL, *get_channel_for_queues(None)]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    for ch in channels:
                        await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(ch)))
                    if ready.is_set():
                        # Reconnected: notifications may have been missed, so wake the workers to look.
                        self._listeners.emit(TaskEvent("queued", ""))
                    ready.set()
                    async for n in conn.notifies():
                        self._on_notify(n.channel, n.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            self._listeners.emit(TaskEvent.from_json(payload))
            return
        msg = json.loads(payload)
        if msg.get("type") == "job_inserted":
            self._listeners.emit(TaskEvent("queued", ""))
        elif msg.get("type") == "abort_job_requested":
            with self._held_lock:
                mine = [tu for (tu, _), job_id in self._held.items() if job_id == msg.get("job_id")]
            for tu in mine:
                self._listeners.emit(TaskEvent("cancel", tu, TaskState.RUNNING.value))

    # -- dispatch tokens

    def token_queue(self, queue: str) -> str:
        """The procrastinate queue of a capability queue: ``<self.queue>:<queue>``, or a digest of it when
        procrastinate's NOTIFY channel for that name would be longer than PostgreSQL allows."""
        name = f"{self.queue}:{queue}"
        if len(next(iter(get_channel_for_queues([name]))).encode()) > _CHANNEL_MAX:
            name = f"{self.queue}:{hashlib.blake2b(queue.encode(), digest_size=8).hexdigest()}"
        return name

    async def _dispatch(self, conn: psycopg.AsyncConnection[Any], task_uuid: str, priority: int, queue: str) -> None:
        """Defer the task's token inside the caller's transaction (a savepoint keeps a duplicate harmless)."""
        job = Job(id=None, queue=self.token_queue(queue), lock=None, queueing_lock=task_uuid, task_name=TASK_NAME,
                  priority=priority, task_kwargs={"task_uuid": task_uuid})
        try:
            async with conn.transaction():
                job = await self.jobs.defer_job_async(job, connection=conn)
        except pexc.AlreadyEnqueued:
            return  # a token for this task is already waiting
        await conn.execute("UPDATE wanflash_tasks SET job_id=%s WHERE task_uuid=%s", (job.id, task_uuid))

    async def _drop_token(self, job_id: int | None) -> None:
        if job_id is None:
            return
        try:
            await self.jobs.finish_job_by_id_async(job_id, procrastinate.jobs.Status.SUCCEEDED, delete_job=True)
        except pexc.ConnectorException:
            pass  # already gone (retried by another worker's stalled-job pass, or deleted)

    def _release(self, task_uuid: str, attempt: int) -> int | None:
        with self._held_lock:
            return self._held.pop((task_uuid, attempt), None)

    async def _ensure_worker(self) -> int:
        if self._worker_id is None:
            await self.jobs.prune_stalled_workers(self.stalled_worker_seconds)
            self._worker_id = await self.jobs.register_worker()
            if self._beat_task is not None:
                self._beat_task.cancel()
            self._beat_task = asyncio.create_task(self._beat(self._worker_id), name="wanflash-worker-heartbeat")
            self._side.append(self._beat_task)
            await self._ensure_listening()
        return self._worker_id

    async def _fetch(self, queues: list[str] | None) -> Job | None:
        worker_id = await self._ensure_worker()
        try:
            return await self.jobs.fetch_job(queues=queues, worker_id=worker_id)
        except pexc.ConnectorException as exc:
            if not isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                raise
        # Our worker row is gone: another process pruned it because our heartbeat was late (its
        # tokens were retried and our leases voided, so nothing of ours is lost). Register again.
        log.warning("procrastinate worker %s was pruned as stalled; registering again", worker_id)
        self._worker_id = None
        return await self.jobs.fetch_job(queues=queues, worker_id=await self._ensure_worker())

    async def _beat(self, worker_id: int) -> None:
        while True:
            await asyncio.sleep(self.worker_heartbeat_seconds)
            try:
                await self.jobs.update_heartbeat(worker_id)
            except Exception:
                log.warning("procrastinate worker heartbeat failed", exc_info=True)

    # -- tasks: API side

    def insert(self, spec: JobSpec, *, now: float | None = None, key_hash: str | None = None,
               max_in_flight: int | None = None, priority: int = 0) -> None:
        """Persist a queued task and defer its token in one transaction. Raises :class:`DuplicateTask`,
        :class:`InFlightExceeded` (the per-key count is serialised by an advisory lock on the key)."""
        self._call(self._insert, spec, time.time() if now is None else now, key_hash, max_in_flight, priority)

    def insert_many(self, requests: list[InsertRequest], *, now: float | None = None
                    ) -> list[DuplicateTask | InFlightExceeded | None]:
        """One transaction per request: PostgreSQL commits concurrently, so batching buys little here."""
        t = time.time() if now is None else now
        out: list[DuplicateTask | InFlightExceeded | None] = []
        for r in requests:
            try:
                self._call(self._insert, r.spec, t, r.key_hash, r.max_in_flight, r.priority)
                out.append(None)
            except (DuplicateTask, InFlightExceeded) as exc:
                out.append(exc)
        return out

    async def _insert(self, spec: JobSpec, t: float, key_hash: str | None, max_in_flight: int | None,
                      priority: int) -> None:
        async with self._tx() as conn:
            if key_hash is not None and max_in_flight is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NS, key_hash))
                rows = await self._q(conn, "SELECT COUNT(*) AS n FROM wanflash_tasks WHERE key_hash=%s "
                                           "AND state IN ('queued','running')", (key_hash,))
                if rows[0]["n"] >= max_in_flight:
                    raise InFlightExceeded(int(rows[0]["n"]))
            rows = await self._q(
                conn,
                "INSERT INTO wanflash_tasks (task_uuid, spec, state, priority, max_attempts, created, key_hash, queue) "
                "VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s) ON CONFLICT (task_uuid) DO NOTHING RETURNING task_uuid",
                (spec.task_uuid, spec.model_dump_json(), priority, self.max_attempts, t, key_hash, task_queue(spec)))
            if not rows:
                raise DuplicateTask(spec.task_uuid)
            await self._dispatch(conn, spec.task_uuid, priority, task_queue(spec))

    def in_flight(self, key_hash: str) -> int:
        row = self._call(self._one, "SELECT COUNT(*) AS n FROM wanflash_tasks WHERE key_hash=%s "
                                    "AND state IN ('queued','running')", (key_hash,))
        return int(row["n"]) if row else 0

    def get(self, task_uuid: str) -> TaskRecord | None:
        row = self._call(self._one, "SELECT * FROM wanflash_tasks WHERE task_uuid=%s", (task_uuid,))
        return None if row is None else record_from_row(row)

    def counts(self) -> dict[str, int]:
        rows = self._call(self._all, "SELECT state, COUNT(*) AS n FROM wanflash_tasks GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    def media_due(self, now: float, *, default_ttl: int, grace: float, limit: int = 200) -> list[TaskRecord]:
        rows = self._call(
            self._all,
            "SELECT * FROM wanflash_tasks WHERE media_deleted IS NULL AND finished <= %s AND state IN (%s, %s, %s) "
            "AND finished + COALESCE((spec::jsonb->>'ttl')::double precision, %s) + %s <= %s "
            "ORDER BY finished LIMIT %s",
            (media_due_bound(now, default_ttl=default_ttl, grace=grace), *TERMINAL_STATES, default_ttl, grace, now,
             limit))
        return [record_from_row(r) for r in rows]

    def media_deleted(self, task_uuid: str, *, now: float | None = None) -> None:
        self._call(self._rowcount, "UPDATE wanflash_tasks SET media_deleted=%s WHERE task_uuid=%s",
                   (time.time() if now is None else now, task_uuid))

    def request_cancel(self, task_uuid: str, *, now: float | None = None) -> bool:
        """Cancel a queued task at once (its token deleted); flag a running one and abort its token."""
        return bool(self._call(self._request_cancel, task_uuid, time.time() if now is None else now))

    async def _request_cancel(self, task_uuid: str, t: float) -> bool:
        async with self._tx() as conn:
            rows = await self._q(conn, f"UPDATE wanflash_tasks SET state='cancelled', finished=%s, {_CANCELLED} "
                                       "WHERE task_uuid=%s AND state='queued' RETURNING job_id", (t, task_uuid))
            if rows:
                await self._emit_outbox(conn, task_uuid, t)
                await self._notify(conn, TaskEvent("state", task_uuid, TaskState.CANCELLED.value))
                if rows[0]["job_id"] is not None:
                    await self.jobs.cancel_job_by_id_async(rows[0]["job_id"], delete_job=True, connection=conn)
                return True
            rows = await self._q(conn, "UPDATE wanflash_tasks SET cancel_requested=TRUE WHERE task_uuid=%s "
                                       "AND state='running' RETURNING job_id", (task_uuid,))
            if not rows:
                return False
            if rows[0]["job_id"] is not None:
                # procrastinate's abort: sets abort_requested and NOTIFYs the queue's listeners at commit.
                await self.jobs.cancel_job_by_id_async(rows[0]["job_id"], abort=True, connection=conn)
            return True

    # -- tasks: worker side

    def worker_started(self, *, sole: bool = True) -> None:
        """Register this process as a procrastinate worker (heartbeat) and start listening. ``sole`` does
        not matter here: leases of dead processes are recovered by procrastinate's heartbeat."""
        self._call(self._ensure_worker)

    def claim(self, owner: str, lease_seconds: float, *, now: float | None = None,
              queues: Sequence[str] | None = None) -> Claim | None:
        """Reap stalled work, then take the next token of ``queues`` (None: any queue; priority, then FIFO)
        and lease its task to ``owner``."""
        tokens = None if queues is None else [self.token_queue(q) for q in queues]
        return self._call(self._claim, owner, lease_seconds, time.time() if now is None else now,
                          tokens)

    async def _claim(self, owner: str, lease_seconds: float, t: float, tokens: list[str] | None) -> Claim | None:
        await self._ensure_worker()
        await self._expire(t)
        while True:
            job = await self._fetch(tokens)
            if job is None:
                return None
            tu = str(job.task_kwargs.get("task_uuid", ""))
            async with self._tx() as conn:
                rows = await self._q(
                    conn,
                    "UPDATE wanflash_tasks SET state='running', attempt=attempt+1, lease_owner=%s, lease_until=%s, "
                    "started=%s, job_id=%s, progress_step=0, progress_total=0, progress_stage=NULL "
                    "WHERE task_uuid=%s AND state='queued' RETURNING attempt, spec, created",
                    (owner, t + lease_seconds, t, job.id, tu))
                if rows:
                    await self._notify(conn, TaskEvent("state", tu, TaskState.RUNNING.value))
            if not rows:
                await self._drop_token(job.id)  # stale: its task is not waiting any more
                continue
            assert job.id is not None  # fetched jobs always have an id
            with self._held_lock:
                self._held[(tu, rows[0]["attempt"])] = job.id
            return Claim(tu, rows[0]["attempt"], JobSpec.model_validate_json(rows[0]["spec"]), rows[0]["created"])

    def expire_leases(self, *, now: float | None = None) -> int:
        """Recover stalled tokens and expired leases; returns how many tasks were re-queued or failed."""
        return self._call(self._expire, time.time() if now is None else now)

    async def _expire(self, t: float) -> int:
        # 1. procrastinate's stalled-job recovery: tokens of workers whose heartbeat stopped go back
        #    to 'todo' (keeping their place in line), and the dead holder's lease is void now.
        for job in await self.jobs.get_stalled_jobs(task_name=TASK_NAME,
                                                    seconds_since_heartbeat=self.stalled_worker_seconds):
            try:
                await self.jobs.retry_job(job)
            except pexc.ConnectorException:
                await self._drop_token(job.id)  # another token for this task already waits
            await self._rowcount("UPDATE wanflash_tasks SET lease_until=0 WHERE job_id=%s AND state='running'",
                                 (job.id,))
        # 2. Expired leases: re-queue with a token (a live zombie keeps its own, and drops it when its
        #    fenced write fails), or fail once attempts are used up.
        async with self._tx() as conn:
            requeued = await self._q(
                conn,
                "UPDATE wanflash_tasks SET state='queued', lease_owner=NULL, lease_until=NULL "
                "WHERE state='running' AND lease_until < %s AND attempt < max_attempts "
                "RETURNING task_uuid, priority, queue, spec",
                (t,))
            for r in requeued:
                await self._dispatch(conn, r["task_uuid"], r["priority"], _queue_of(r))
                await self._notify(conn, TaskEvent("state", r["task_uuid"], TaskState.QUEUED.value))
            lost = await self._q(
                conn,
                "UPDATE wanflash_tasks SET state='failed', lease_owner=NULL, lease_until=NULL, finished=%s, "
                "error_code='workerLost', error_message='The worker running this task stopped responding.' "
                "WHERE state='running' AND lease_until < %s AND attempt >= max_attempts RETURNING task_uuid",
                (t, t))
            for r in lost:
                await self._emit_outbox(conn, r["task_uuid"], t)
                await self._notify(conn, TaskEvent("state", r["task_uuid"], TaskState.FAILED.value))
        return len(requeued) + len(lost)

    def heartbeat(self, task_uuid: str, attempt: int, lease_seconds: float, *, now: float | None = None) -> bool:
        """Extend the lease. ``False``: the lease was lost (stop and write nothing); the token is dropped."""
        t = time.time() if now is None else now
        return bool(self._call(self._heartbeat, task_uuid, attempt, t + lease_seconds))

    async def _heartbeat(self, task_uuid: str, attempt: int, until: float) -> bool:
        n = await self._rowcount("UPDATE wanflash_tasks SET lease_until=%s WHERE task_uuid=%s AND attempt=%s "
                                 "AND state='running'", (until, task_uuid, attempt))
        if n != 1:
            await self._drop_token(self._release(task_uuid, attempt))
        return n == 1

    def cancel_requested(self, task_uuid: str) -> bool:
        row = self._call(self._one, "SELECT cancel_requested FROM wanflash_tasks WHERE task_uuid=%s", (task_uuid,))
        return bool(row and row["cancel_requested"])

    def progress(self, task_uuid: str, attempt: int, step: int, total: int, stage: str) -> bool:
        return bool(self._call(self._progress, task_uuid, attempt, step, total, stage))

    async def _progress(self, task_uuid: str, attempt: int, step: int, total: int, stage: str) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE wanflash_tasks SET progress_step=%s, progress_total=%s, progress_stage=%s "
                "WHERE task_uuid=%s AND attempt=%s AND state='running'", (step, total, stage, task_uuid, attempt))
            if cur.rowcount == 1:
                await self._notify(conn, TaskEvent("progress", task_uuid, TaskState.RUNNING.value, step, total, stage))
            return cur.rowcount == 1

    def complete(self, task_uuid: str, attempt: int, results: Sequence[OutputRecord], *,
                 now: float | None = None) -> bool:
        """Record success. ``False`` when ``attempt`` is stale: nothing is written."""
        return bool(self._call(self._finish, task_uuid, attempt, TaskState.SUCCEEDED,
                               time.time() if now is None else now,
                               "results=%s", (dump_results(results),)))

    def fail(self, task_uuid: str, attempt: int, code: str, message: str, *, retryable: bool = False,
             now: float | None = None) -> bool:
        """Record a failure; a retryable one re-queues while attempts remain. Fenced like complete."""
        t = time.time() if now is None else now
        if retryable and self._call(self._requeue, task_uuid, attempt, code, message):
            return True
        return bool(self._call(self._finish, task_uuid, attempt, TaskState.FAILED, t,
                               "error_code=%s, error_message=%s", (code, message)))

    def cancelled(self, task_uuid: str, attempt: int, *, now: float | None = None) -> bool:
        return bool(self._call(self._finish, task_uuid, attempt, TaskState.CANCELLED,
                               time.time() if now is None else now, _CANCELLED, ()))

    async def _finish(self, task_uuid: str, attempt: int, state: TaskState, t: float, set_sql: str,
                      params: tuple[Any, ...]) -> bool:
        """A fenced terminal transition with its outbox rows and NOTIFY; then the token is dropped."""
        async with self._tx() as conn:
            cur = await conn.execute(
                f"UPDATE wanflash_tasks SET state=%s, finished=%s, lease_owner=NULL, lease_until=NULL, {set_sql} "
                "WHERE task_uuid=%s AND attempt=%s AND state='running'",
                (state.value, t, *params, task_uuid, attempt))
            ok = cur.rowcount == 1
            if ok:
                await self._emit_outbox(conn, task_uuid, t)
                await self._notify(conn, TaskEvent("state", task_uuid, state.value))
        await self._drop_token(self._release(task_uuid, attempt))
        return ok

    async def _requeue(self, task_uuid: str, attempt: int, code: str, message: str) -> bool:
        """Retryable failure: back to 'queued', and procrastinate's ``retry_job`` puts our own token back
        in line at its original place (a fresh token if that fails)."""
        async with self._tx() as conn:
            rows = await self._q(
                conn,
                "UPDATE wanflash_tasks SET state='queued', lease_owner=NULL, lease_until=NULL, error_code=%s, "
                "error_message=%s WHERE task_uuid=%s AND attempt=%s AND state='running' AND attempt < max_attempts "
                "RETURNING priority, queue, spec",
                (code, message, task_uuid, attempt))
            if rows:
                await self._notify(conn, TaskEvent("state", task_uuid, TaskState.QUEUED.value))
        if not rows:
            return False
        job_id = self._release(task_uuid, attempt)
        try:
            if job_id is None:
                raise pexc.ConnectorException("no token held")
            await self.jobs.retry_job_by_id_async(job_id, retry_at=procrastinate.utils.utcnow())
        except pexc.ConnectorException:
            await self._drop_token(job_id)
            async with self._tx() as conn:
                await self._dispatch(conn, task_uuid, rows[0]["priority"], _queue_of(rows[0]))
        return True

    async def _emit_outbox(self, conn: psycopg.AsyncConnection[Any], task_uuid: str, t: float) -> None:
        rows = await self._q(conn, "SELECT * FROM wanflash_tasks WHERE task_uuid=%s", (task_uuid,))
        for m in self._render(record_from_row(rows[0])):
            await conn.execute(
                "INSERT INTO wanflash_outbox (msg_id, task_uuid, url, body, expires_at, next_at, created) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (msg_id) DO NOTHING",
                (m.msg_id, task_uuid, m.url, m.body, m.expires_at, t, t))

    # -- worker capabilities

    def publish_worker(self, worker_id: str, caps: WorkerCapabilities, ttl_seconds: float, *,
                       now: float | None = None) -> None:
        t = time.time() if now is None else now
        self._call(self._publish, worker_id, caps.model_dump_json(), t, t + ttl_seconds)

    async def _publish(self, worker_id: str, caps: str, t: float, expires: float) -> None:
        async with self._tx() as conn:
            await conn.execute("INSERT INTO wanflash_workers (worker_id, caps, seen, expires) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (worker_id) DO UPDATE SET caps=EXCLUDED.caps, seen=EXCLUDED.seen, "
                               "expires=EXCLUDED.expires", (worker_id, caps, t, expires))
            await conn.execute("DELETE FROM wanflash_workers WHERE seen < %s", (t - KNOWN_WORKER_SECONDS,))

    def withdraw_worker(self, worker_id: str, *, now: float | None = None) -> None:
        self._call(self._rowcount, "UPDATE wanflash_workers SET expires=LEAST(expires, %s) WHERE worker_id=%s",
                   (time.time() if now is None else now, worker_id))

    def workers(self, *, now: float | None = None) -> list[WorkerRecord]:
        t = time.time() if now is None else now
        rows = self._call(self._all, "SELECT * FROM wanflash_workers WHERE seen >= %s ORDER BY seen DESC, worker_id",
                          (t - KNOWN_WORKER_SECONDS,))
        return [worker_from_row(r) for r in rows]

    # -- webhook outbox

    def lease_outbox(self, lease_seconds: float, limit: int = 16, *, now: float | None = None) -> list[OutboxMessage]:
        t = time.time() if now is None else now
        rows = self._call(self._all,
                          "UPDATE wanflash_outbox SET lease_until=%s WHERE msg_id IN "
                          "(SELECT msg_id FROM wanflash_outbox "
                          "WHERE state='pending' AND next_at <= %s AND (lease_until IS NULL OR lease_until < %s) "
                          "ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                          "RETURNING msg_id, task_uuid, url, body, expires_at, attempts",
                          (t + lease_seconds, t, t, limit))
        return [OutboxMessage(r["msg_id"], r["url"], bytes(r["body"]), r["expires_at"], r["attempts"], r["task_uuid"])
                for r in rows]

    def outbox_result(self, msg_id: str, *, state: str, attempts: int, next_at: float | None = None,
                      status: int | None = None, error: str | None = None) -> None:
        self._call(self._rowcount, "UPDATE wanflash_outbox SET state=%s, attempts=%s, next_at=COALESCE(%s, next_at), "
                                   "lease_until=NULL, last_status=%s, last_error=%s WHERE msg_id=%s",
                   (state, attempts, next_at, status, error, msg_id))

    def outbox_rows(self, task_uuid: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows, for tests and operators (a plain method, in no role)."""
        if task_uuid is None:
            rows = self._call(self._all, "SELECT * FROM wanflash_outbox ORDER BY created, msg_id")
        else:
            rows = self._call(self._all, "SELECT * FROM wanflash_outbox WHERE task_uuid=%s ORDER BY msg_id",
                              (task_uuid,))
        return [{**r, "body": bytes(r["body"])} for r in rows]

    # -- API keys (hashes only) and the upload index

    def add_key(self, key_id: str, key_hash: str, *, now: float | None = None) -> None:
        self._call(self._rowcount, "INSERT INTO wanflash_api_keys (key_id, hash, created) VALUES (%s, %s, %s)",
                   (key_id, key_hash, time.time() if now is None else now))

    def key_hash_active(self, key_hash: str) -> bool:
        return self._call(self._one, "SELECT 1 AS ok FROM wanflash_api_keys WHERE hash=%s AND revoked IS NULL",
                          (key_hash,)) is not None

    def list_keys(self) -> list[ApiKeyRow]:
        rows = self._call(self._all, "SELECT key_id, created, revoked FROM wanflash_api_keys ORDER BY created")
        return [ApiKeyRow(r["key_id"], r["created"], r["revoked"]) for r in rows]

    def revoke_key(self, key_id: str, *, now: float | None = None) -> bool:
        return self._call(self._rowcount, "UPDATE wanflash_api_keys SET revoked=%s WHERE key_id=%s AND revoked IS NULL",
                          (time.time() if now is None else now, key_id)) == 1

    def active_key_count(self) -> int:
        row = self._call(self._one, "SELECT COUNT(*) AS n FROM wanflash_api_keys WHERE revoked IS NULL")
        return int(row["n"]) if row else 0

    def add_upload(self, upload_uuid: str, kind: str, key: str, content_type: str, *,
                   now: float | None = None, owner: str | None = None) -> None:
        self._call(self._rowcount, "INSERT INTO wanflash_uploads (upload_uuid, kind, key, content_type, created, "
                                   "key_hash) VALUES (%s, %s, %s, %s, %s, %s)",
                   (upload_uuid, kind, key, content_type, time.time() if now is None else now, owner))

    def get_upload(self, upload_uuid: str) -> Upload | None:
        row = self._call(self._one, "SELECT * FROM wanflash_uploads WHERE upload_uuid=%s", (upload_uuid,))
        return None if row is None else upload_from_row(row)

    def touch_upload(self, upload_uuid: str, *, now: float | None = None) -> None:
        self._call(self._rowcount, "UPDATE wanflash_uploads SET last_used=%s WHERE upload_uuid=%s",
                   (time.time() if now is None else now, upload_uuid))

    def uploads_due(self, before: float, *, limit: int = 200) -> list[Upload]:
        rows = self._call(self._all, "SELECT * FROM wanflash_uploads WHERE COALESCE(last_used, created) <= %s "
                                     "ORDER BY COALESCE(last_used, created) LIMIT %s", (before, limit))
        return [upload_from_row(r) for r in rows]

    def delete_upload(self, upload_uuid: str) -> None:
        self._call(self._rowcount, "DELETE FROM wanflash_uploads WHERE upload_uuid=%s", (upload_uuid,))

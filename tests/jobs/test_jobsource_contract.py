"""One contract, two adapters: every test runs on the embedded SQLite store and on PostgreSQL +
procrastinate (a real server, see conftest.py)."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.records import output
from tests.jobs.test_store import spec
from wanflash.jobs.capabilities import KNOWN_WORKER_SECONDS, WorkerCapabilities
from wanflash.jobs.model import TaskState
from wanflash.jobs.source import (
    DuplicateTask,
    InFlightExceeded,
    JobSource,
    NoTerminalWrites,
    OutboxMessage,
    OutboxRenderer,
    TaskEvent,
    TaskRecord,
    refuse_terminal_writes,
)


class Adapter:
    """Makes sources of one kind that share one database (each like a separate process)."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target
        self.opened: list[JobSource] = []

    def make(self, outbox: OutboxRenderer | None = None) -> JobSource:
        src = open_source(self.kind, self.target, outbox or render_test_outbox)
        self.opened.append(src)
        return src


def open_source(kind: str, target: str, outbox: OutboxRenderer | None = None) -> JobSource:
    outbox = outbox or render_test_outbox
    if kind == "sqlite":
        from wanflash.jobs.store import SqliteJobSource

        return SqliteJobSource(Path(target), outbox=outbox, max_attempts=2)
    from wanflash.jobs.postgres import PostgresJobSource

    return PostgresJobSource(target, outbox=outbox, max_attempts=2, worker_heartbeat_seconds=0.2,
                             stalled_worker_seconds=1.0)


@pytest.fixture(params=["sqlite", "postgres"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    target = str(tmp_path / "db.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    a = Adapter(request.param, target)
    yield a
    for s in a.opened:
        s.close()


@pytest.fixture
def src(adapter: Adapter) -> JobSource:
    return adapter.make()


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_claims_by_priority_then_fifo(src: JobSource) -> None:
    low1, low2, high1, high2, urgent = (spec() for _ in range(5))
    for i, (s, prio) in enumerate([(low1, 0), (high1, 5), (low2, 0), (high2, 5), (urgent, 9)]):
        src.insert(s, now=100.0 + i, priority=prio)
    order = [src.claim("w", 30, now=200.0) for _ in range(6)]
    assert [c.task_uuid for c in order[:5] if c] == [s.task_uuid for s in (urgent, high1, high2, low1, low2)]
    assert order[5] is None
    assert src.get(urgent.task_uuid).priority == 9  # type: ignore[union-attr]


def test_submit_is_idempotent_on_task_uuid(adapter: Adapter) -> None:
    api1, api2 = adapter.make(), adapter.make()  # two API replicas
    s = spec()
    api1.insert(s)
    with pytest.raises(DuplicateTask):
        api2.insert(s)
    with pytest.raises(DuplicateTask):
        api1.insert(s, priority=3)
    assert api2.counts() == {"queued": 1}
    c = api1.claim("w", 30)
    assert c and c.task_uuid == s.task_uuid and c.attempt == 1
    assert api2.claim("w2", 30) is None  # one task, one claim


def test_in_flight_cap(src: JobSource) -> None:
    for _ in range(2):
        src.insert(spec(), key_hash="k", max_in_flight=2)
    with pytest.raises(InFlightExceeded):
        src.insert(spec(), key_hash="k", max_in_flight=2)
    assert src.in_flight("k") == 2


def test_lease_expiry_requeues_with_next_attempt(src: JobSource) -> None:
    s = spec()
    src.insert(s, now=0)
    first = src.claim("a", 30, now=10)
    assert first and first.attempt == 1 and first.created == 0  # submit time, for the queue-wait metric
    assert src.heartbeat(s.task_uuid, 1, 30, now=20)  # lease now runs to 50
    assert src.claim("b", 30, now=45) is None
    second = src.claim("b", 30, now=51)
    assert second and second.task_uuid == s.task_uuid and second.attempt == 2
    assert src.get(s.task_uuid).state is TaskState.RUNNING  # type: ignore[union-attr]


def test_completion_is_fenced_by_attempt(src: JobSource) -> None:
    s = spec()
    src.insert(s, now=0)
    assert src.claim("a", 30, now=1)
    assert src.claim("b", 30, now=40)  # a's lease expired: b runs attempt 2
    # The zombie first attempt can write nothing at all.
    assert not src.heartbeat(s.task_uuid, 1, 30, now=41)
    assert not src.progress(s.task_uuid, 1, 1, 2, "denoise")
    assert not src.complete(s.task_uuid, 1, [output("stale")])
    assert not src.fail(s.task_uuid, 1, "x", "y")
    assert not src.fail(s.task_uuid, 1, "x", "y", retryable=True)
    assert not src.cancelled(s.task_uuid, 1)
    assert src.complete(s.task_uuid, 2, [output("fresh")], now=60)
    rec = src.get(s.task_uuid)
    assert rec and rec.state is TaskState.SUCCEEDED and rec.results == [output("fresh")] and rec.finished == 60
    assert not src.complete(s.task_uuid, 2, [output("again")])  # terminal: a second completion is refused
    assert src.get(s.task_uuid).results == [output("fresh")]  # type: ignore[union-attr]


def test_cancel_while_queued(src: JobSource) -> None:
    s = spec()
    src.insert(s)
    assert src.request_cancel(s.task_uuid)
    rec = src.get(s.task_uuid)
    assert rec and rec.state is TaskState.CANCELLED and rec.error_code == "taskCancelled"
    assert src.claim("w", 30) is None
    assert not src.request_cancel(s.task_uuid)  # nothing left to cancel


def test_cancel_while_running_reaches_the_worker(adapter: Adapter) -> None:
    worker = adapter.make()
    # PostgreSQL: the API is another process, reached through procrastinate's abort NOTIFY.
    # Embedded: the API and the supervisor share one store, and the event is in-process.
    api = adapter.make() if adapter.kind == "postgres" else worker
    events: list[TaskEvent] = []
    worker.subscribe(events.append)
    s = spec()
    api.insert(s)
    c = worker.claim("w", 30)
    assert c
    assert api.request_cancel(s.task_uuid)
    assert worker.cancel_requested(s.task_uuid)  # the poll the supervisor makes each heartbeat
    assert wait_for(lambda: any(e.kind == "cancel" and e.task_uuid == s.task_uuid for e in events))
    assert worker.cancelled(s.task_uuid, c.attempt)
    rec = api.get(s.task_uuid)
    assert rec and rec.state is TaskState.CANCELLED
    assert not worker.complete(s.task_uuid, c.attempt, [output("late")])


def test_attempts_cap_fails_with_worker_lost(src: JobSource) -> None:
    s = spec()
    src.insert(s, now=0)
    assert src.claim("a", 10, now=1)
    c2 = src.claim("a", 10, now=12)  # attempt 2 after expiry
    assert c2 and c2.attempt == 2
    assert src.claim("a", 10, now=30) is None  # attempt 2 expired and max_attempts=2
    rec = src.get(s.task_uuid)
    assert rec and rec.state is TaskState.FAILED and rec.error_code == "workerLost" and rec.attempt == 2


def test_retryable_failure_requeues_until_cap(src: JobSource) -> None:
    s = spec()
    src.insert(s)
    c1 = src.claim("a", 30)
    assert c1 and src.fail(s.task_uuid, 1, "workerLost", "died", retryable=True)
    assert src.get(s.task_uuid).state is TaskState.QUEUED  # type: ignore[union-attr]
    c2 = src.claim("a", 30)
    assert c2 and c2.attempt == 2
    assert src.fail(s.task_uuid, 2, "workerLost", "died again", retryable=True)
    rec = src.get(s.task_uuid)
    assert rec and rec.state is TaskState.FAILED and rec.error_message == "died again"
    assert src.claim("a", 30) is None


def test_progress_events_reach_a_subscriber(adapter: Adapter) -> None:
    worker = adapter.make()
    # PostgreSQL: another process (an API replica) sees the worker's progress through NOTIFY.
    # Embedded: one process owns the file, so its listeners are in-process.
    observer = adapter.make() if adapter.kind == "postgres" else worker
    events: list[TaskEvent] = []
    observer.subscribe(events.append)
    s = spec()
    worker.insert(s)
    c = worker.claim("w", 30)
    assert c and worker.progress(s.task_uuid, 1, 2, 4, "denoise")
    assert worker.complete(s.task_uuid, 1, [output("v")])
    mine = lambda: [e for e in events if e.task_uuid == s.task_uuid]  # noqa: E731
    assert wait_for(lambda: any(e.kind == "state" and e.state == "succeeded" for e in mine()))
    assert [(e.step, e.total, e.stage) for e in mine() if e.kind == "progress"] == [(2, 4, "denoise")]
    rec = observer.get(s.task_uuid)
    assert rec and (rec.progress_step, rec.progress_total, rec.progress_stage) == (2, 4, "denoise")


def render_test_outbox(rec: TaskRecord) -> list[OutboxMessage]:
    """One message per terminal task with a webhook URL; the body is the state reached."""
    if not rec.spec.webhook_url:
        return []
    return [OutboxMessage(f"msg_{rec.task_uuid}", rec.spec.webhook_url, rec.state.value.encode(), time.time() + 60)]


def test_terminal_transition_writes_the_outbox_once(src: JobSource) -> None:
    s = spec().model_copy(update={"webhook_url": "http://h/hook"})
    src.insert(s)
    assert src.claim("w", 30)
    assert src.complete(s.task_uuid, 1, [output("v")])
    rows = src.outbox_rows(s.task_uuid)
    assert [(r["msg_id"], bytes(r["body"])) for r in rows] == [(f"msg_{s.task_uuid}", b"succeeded")]
    leased = src.lease_outbox(60)
    assert [m.msg_id for m in leased] == [f"msg_{s.task_uuid}"]
    assert src.lease_outbox(60) == []  # leased: a second delivery loop skips it
    src.outbox_result(leased[0].msg_id, state="delivered", attempts=1, status=200)
    assert src.outbox_rows(s.task_uuid)[0]["state"] == "delivered"


def test_a_source_that_renders_no_webhooks_cannot_end_a_task(adapter: Adapter) -> None:
    """Opened with refuse_terminal_writes (key administration, migrations), a terminal transition
    raises and is rolled back instead of ending the task without its webhook."""
    admin, worker = adapter.make(refuse_terminal_writes), adapter.make()
    s = spec().model_copy(update={"webhook_url": "http://h/hook"})
    admin.insert(s)
    c = admin.claim("w", 30)
    assert c
    with pytest.raises(NoTerminalWrites):
        admin.complete(s.task_uuid, c.attempt, [output("v")])
    rec = worker.get(s.task_uuid)
    assert rec and rec.state is TaskState.RUNNING and rec.results is None
    assert worker.complete(s.task_uuid, c.attempt, [output("v")])  # the webhook-rendering process can
    assert [r["msg_id"] for r in worker.outbox_rows(s.task_uuid)] == [f"msg_{s.task_uuid}"]


def test_media_is_due_once_links_expire_plus_grace(src: JobSource) -> None:
    def finish(state: str, finished: float, ttl: int | None = None) -> str:
        s = spec().model_copy(update={"ttl": ttl})
        src.insert(s, now=finished - 10)
        if state == "cancelled":
            assert src.request_cancel(s.task_uuid, now=finished)
            return s.task_uuid
        c = src.claim("w", 30, now=finished - 5)
        assert c and c.task_uuid == s.task_uuid
        if state == "succeeded":
            assert src.complete(s.task_uuid, c.attempt, [output("v", key="k")], now=finished)
        elif state == "failed":
            assert src.fail(s.task_uuid, c.attempt, "inferenceError", "boom", now=finished)
        return s.task_uuid

    a = finish("succeeded", 1000)  # default ttl 3600
    b = finish("succeeded", 1001, ttl=60)
    c = finish("failed", 1002)
    d = finish("cancelled", 1003, ttl=120)
    running = spec()
    src.insert(running, now=1004)
    assert src.claim("w", 30, now=1005)
    src.insert(spec(), now=1006)  # queued

    def due(now: float, limit: int = 200) -> list[str]:
        return [r.task_uuid for r in src.media_due(now, default_ttl=3600, grace=100, limit=limit)]

    assert due(1001 + 60 + 99) == []  # b's links expired, but the grace has not passed
    assert due(1001 + 60 + 100) == [b]
    assert due(1003 + 120 + 100) == [b, d]
    assert due(1002 + 3600 + 100) == [a, b, c, d]  # oldest first; never the queued or running task
    assert due(10**9, limit=2) == [a, b]
    src.media_deleted(b)
    assert due(10**9) == [a, c, d]
    rec = src.get(b)  # the row stays: polls still answer
    assert rec and rec.state is TaskState.SUCCEEDED


def test_uploads_are_due_from_their_last_use(src: JobSource) -> None:
    src.add_upload("old", "image", "uploads/old.png", "image/png", now=100)
    src.add_upload("used", "image", "uploads/used.png", "image/png", now=100)
    src.add_upload("new", "image", "uploads/new.png", "image/png", now=500)
    src.touch_upload("used", now=900)  # a task referenced it
    assert [u.upload_uuid for u in src.uploads_due(499)] == ["old"]
    assert [u.upload_uuid for u in src.uploads_due(10**9)] == ["old", "new", "used"]
    assert [u.upload_uuid for u in src.uploads_due(10**9, limit=1)] == ["old"]
    src.delete_upload("old")
    assert src.get_upload("old") is None and [u.key for u in src.uploads_due(600)] == ["uploads/new.png"]


def test_keys_and_uploads_are_shared(adapter: Adapter) -> None:
    a, b = adapter.make(), adapter.make()
    a.add_key("k1", "h1")
    assert b.key_hash_active("h1") and b.active_key_count() == 1
    assert [k.key_id for k in b.list_keys()] == ["k1"]
    assert b.revoke_key("k1") and not a.key_hash_active("h1")
    a.add_upload("u1", "image", "uploads/u1.png", "image/png")
    up = b.get_upload("u1")
    assert up and up.key == "uploads/u1.png"
    assert b.get_upload("nope") is None


def _claimer(kind: str, target: str, start: Any, out: Any) -> None:
    src = open_source(kind, target)
    got: list[str] = []
    try:
        start.wait(60)  # every claimer is connected before the first claim
        while (c := src.claim(f"p{id(src)}", 30)) is not None:
            got.append(c.task_uuid)
            time.sleep(0.005)  # a job takes a moment: the others claim meanwhile
            src.complete(c.task_uuid, c.attempt, [output(str(uuid.uuid4()))])
    finally:
        out.put(got)
        src.close()


def test_concurrent_claimers_never_share_a_task(adapter: Adapter) -> None:
    src = adapter.make()
    ids = []
    for _ in range(60):
        s = spec()
        src.insert(s)
        ids.append(s.task_uuid)
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(adapter.kind, adapter.target, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    flat = [tu for part in claimed for tu in part]
    assert sorted(flat) == sorted(ids)  # every task claimed, none twice
    assert sum(1 for part in claimed if part) >= 2  # they really competed
    assert src.counts() == {"succeeded": 60}
    assert all(src.get(tu).attempt == 1 for tu in ids)  # type: ignore[union-attr]


def test_tasks_and_uploads_carry_their_owner(adapter: Adapter) -> None:
    """Ownership (issue 15): the submitting key's digest comes back with the task and the upload, from
    any process; rows written without a key have no owner."""
    a, b = adapter.make(), adapter.make()
    mine, anon = spec(), spec()
    a.insert(mine, key_hash="digest-a")
    a.insert(anon)
    got = b.get(mine.task_uuid)
    assert got is not None and got.owner == "digest-a"
    assert (b.get(anon.task_uuid) or pytest.fail("missing")).owner is None
    a.add_upload("u-a", "image", "uploads/u-a.png", "image/png", owner="digest-a")
    a.add_upload("u-none", "media", "uploads/u-none.bin", "application/octet-stream")
    up = b.get_upload("u-a")
    assert up is not None and up.owner == "digest-a"
    assert (b.get_upload("u-none") or pytest.fail("missing")).owner is None
    # The owner survives the worker's writes (claim, complete) and appears in the retention listing.
    c = b.claim("w", 30)
    assert c is not None
    b.complete(c.task_uuid, c.attempt, [output("v", key="k", seed=1)])
    assert (a.get(c.task_uuid) or pytest.fail("missing")).owner == (None if c.task_uuid == anon.task_uuid
                                                                     else "digest-a")
    assert [u.owner for u in a.uploads_due(10**12)] == ["digest-a", None]


def test_ownership_migration_keeps_existing_uploads_unowned(adapter: Adapter) -> None:
    """A database from before ownership (no owner column on uploads) is upgraded in place: its uploads
    are kept, owned by no key."""
    if adapter.kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(adapter.target)
        db.execute("CREATE TABLE uploads (upload_uuid TEXT PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, "
                   "content_type TEXT NOT NULL, created REAL NOT NULL)")
        db.execute("INSERT INTO uploads VALUES ('legacy', 'image', 'uploads/legacy.png', 'image/png', 1.0)")
        db.commit()
        db.close()
        src = adapter.make()
    else:
        import psycopg

        with psycopg.connect(adapter.target, autocommit=True) as conn:
            conn.execute("ALTER TABLE wanflash_uploads DROP COLUMN key_hash")
            conn.execute("INSERT INTO wanflash_uploads (upload_uuid, kind, key, content_type, created) "
                         "VALUES ('legacy', 'image', 'uploads/legacy.png', 'image/png', 1.0)")
        src = adapter.make()
        src.migrate()  # type: ignore[attr-defined]  # `wanflash migrate`
    up = src.get_upload("legacy")
    assert up is not None and up.key == "uploads/legacy.png" and up.owner is None
    src.add_upload("new", "image", "uploads/new.png", "image/png", owner="digest-b")
    assert (src.get_upload("new") or pytest.fail("missing")).owner == "digest-b"


def caps(profile: str = "tiny", fps: int = 16, **kw: Any) -> WorkerCapabilities:
    return WorkerCapabilities(profile=profile, fps=fps, max_clip_frames=81, **kw)


def test_claims_only_from_the_queues_a_worker_serves(src: JobSource) -> None:
    five_b = spec().model_copy(update={"profile": "wan2.2-ti2v-5b", "fps": 24, "num_frames": 48, "audio": False})
    tiny_audio = spec()  # its sound must be generated: queue tiny+audio
    tiny_silent = spec().model_copy(update={"audio": False})
    tiny_checked = spec().model_copy(update={"audio": False, "safety_mode": "fast", "safety_check": True})
    for i, s in enumerate((five_b, tiny_audio, tiny_silent, tiny_checked)):
        src.insert(s, now=100.0 + i)
    silent_tiny = caps()  # no audio model, no detector: the plain tiny queue only
    assert silent_tiny.queues() == ["tiny"]
    c = src.claim("w", 30, now=200, queues=silent_tiny.queues())
    assert c and c.task_uuid == tiny_silent.task_uuid
    assert src.claim("w", 30, now=200, queues=silent_tiny.queues()) is None  # the others need what it lacks
    c = src.claim("w", 30, now=200, queues=caps(native_audio="ltx2", safety_detector="nudenet").queues())
    assert c and c.task_uuid == tiny_audio.task_uuid  # FIFO across its four queues
    c = src.claim("w", 30, now=200, queues=caps(native_audio="ltx2", safety_detector="nudenet").queues())
    assert c and c.task_uuid == tiny_checked.task_uuid
    c = src.claim("w", 30, now=200, queues=caps("wan2.2-ti2v-5b", 24).queues())
    assert c and c.task_uuid == five_b.task_uuid and c.spec.fps == 24
    assert src.claim("w", 30, now=200) is None


def test_a_requeued_task_stays_in_its_queue(src: JobSource) -> None:
    five_b = spec().model_copy(update={"profile": "wan2.2-ti2v-5b", "fps": 24, "num_frames": 48, "audio": False})
    src.insert(five_b, now=0)
    mine = caps("wan2.2-ti2v-5b", 24).queues()
    c = src.claim("a", 10, now=1, queues=mine)
    assert c and src.fail(five_b.task_uuid, c.attempt, "workerLost", "died", retryable=True)
    assert src.claim("b", 10, now=2, queues=caps().queues()) is None  # a tiny worker never gets it
    c = src.claim("b", 10, now=3, queues=mine)
    assert c and c.attempt == 2
    # Lease expiry (attempt 2 is the last: this one fails, so use a fresh task for the re-queue path).
    other = spec().model_copy(update={"profile": "wan2.2-ti2v-5b", "fps": 24, "num_frames": 48, "audio": False})
    src.insert(other, now=20)
    assert src.claim("c", 10, now=21, queues=mine)
    assert src.claim("d", 10, now=40, queues=caps().queues()) is None  # expired and re-queued, not for tiny
    c = src.claim("d", 10, now=41, queues=mine)
    assert c and c.task_uuid == other.task_uuid and c.attempt == 2


def test_workers_publish_refresh_expire_and_withdraw(adapter: Adapter) -> None:
    worker, api = adapter.make(), adapter.make()  # a worker process and an API replica
    five_b = caps("wan2.2-ti2v-5b", 24, native_audio="ltx2")
    worker.publish_worker("w1", five_b, 30, now=1000)
    worker.publish_worker("w2", caps(), 30, now=1005)
    seen = api.workers(now=1010)
    assert [(r.worker_id, r.caps, r.seen, r.expires) for r in seen] == [
        ("w2", caps(), 1005, 1035), ("w1", five_b, 1000, 1030)]  # latest first
    assert [r.worker_id for r in seen if r.live(1032)] == ["w2"]  # w1 stopped refreshing
    worker.publish_worker("w1", five_b.model_copy(update={"safety_detector": "clip"}), 30, now=1031)
    (w1,) = [r for r in api.workers(now=1032) if r.worker_id == "w1"]
    assert w1.live(1032) and w1.caps.safety and w1.seen == 1031
    worker.withdraw_worker("w1", now=1040)  # a graceful stop: not live, still known
    (w1,) = [r for r in api.workers(now=1041) if r.worker_id == "w1"]
    assert not w1.live(1041) and w1.caps.profile == "wan2.2-ti2v-5b"
    # A week later the records are forgotten (and pruned by the next publish).
    later = 1041 + KNOWN_WORKER_SECONDS
    assert api.workers(now=later) == []
    worker.publish_worker("w3", caps(), 30, now=later)
    assert [r.worker_id for r in api.workers(now=1041)] == ["w3"]

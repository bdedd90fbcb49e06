"""The SQLite task table: FIFO claims, unique taskUUID, leases, fencing by attempt."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks, output
from wanflash.jobs.model import JobSpec, TaskState
from wanflash.jobs.store import DuplicateTask, SqliteJobSource


def spec(task_uuid: str | None = None) -> JobSpec:
    return JobSpec(
        task_uuid=task_uuid or str(uuid.uuid4()), model="alibaba:wan@2.6-flash", profile="tiny",
        positive_prompt="p", width=1280, height=720, resolution_class="720p", duration=2, fps=16,
        num_frames=32, seeds=[1], cost=0.1,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobSource:
    s = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks, max_attempts=2)
    yield s
    s.close()


def test_wal_and_full_sync(store: SqliteJobSource) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_claim_is_fifo(store: SqliteJobSource) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for i, tu in enumerate(ids):
        store.insert(spec(tu), now=100.0 + i)
    got = [store.claim("w", 30, now=200.0) for _ in range(4)]
    assert [c.task_uuid for c in got[:3] if c] == ids
    assert got[3] is None
    assert all(c and c.attempt == 1 for c in got[:3])


def test_duplicate_rejected(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s)
    with pytest.raises(DuplicateTask):
        store.insert(s)


def test_lease_expiry_requeues_with_next_attempt_and_fences_stale_writes(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s, now=0)
    first = store.claim("a", 30, now=10)
    assert first and first.attempt == 1
    assert store.heartbeat(s.task_uuid, 1, 30, now=20)
    assert store.claim("b", 30, now=45) is None  # lease runs to 50
    second = store.claim("b", 30, now=51)
    assert second and second.attempt == 2 and second.task_uuid == s.task_uuid
    # The zombie first attempt can no longer write anything.
    assert not store.heartbeat(s.task_uuid, 1, 30, now=52)
    assert not store.progress(s.task_uuid, 1, 1, 2, "denoise")
    assert not store.complete(s.task_uuid, 1, [output("x")])
    assert not store.fail(s.task_uuid, 1, "x", "y")
    assert store.complete(s.task_uuid, 2, [output("y", seed=1, key="k")], now=60)
    rec = store.get(s.task_uuid)
    assert rec and rec.state is TaskState.SUCCEEDED and rec.results == [output("y", seed=1, key="k")]
    assert rec.finished == 60


def test_attempts_cap_fails(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s, now=0)
    assert store.claim("a", 10, now=1)
    assert store.claim("a", 10, now=12)  # attempt 2 after expiry
    assert store.claim("a", 10, now=30) is None  # attempt 2 expired and max_attempts=2
    rec = store.get(s.task_uuid)
    assert rec and rec.state is TaskState.FAILED and rec.error_code == "workerLost" and rec.attempt == 2


def test_retryable_failure_requeues_until_cap(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s)
    c1 = store.claim("a", 30)
    assert c1 and store.fail(s.task_uuid, 1, "workerLost", "died", retryable=True)
    assert store.get(s.task_uuid).state is TaskState.QUEUED  # type: ignore[union-attr]
    c2 = store.claim("a", 30)
    assert c2 and c2.attempt == 2
    assert store.fail(s.task_uuid, 2, "workerLost", "died again", retryable=True)
    rec = store.get(s.task_uuid)
    assert rec and rec.state is TaskState.FAILED and rec.error_message == "died again"


def test_progress_and_cancel(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s)
    c = store.claim("a", 30)
    assert c and store.progress(s.task_uuid, 1, 1, 4, "denoise")
    rec = store.get(s.task_uuid)
    assert rec and (rec.progress_step, rec.progress_total, rec.progress_stage) == (1, 4, "denoise")
    assert store.request_cancel(s.task_uuid) and store.cancel_requested(s.task_uuid)
    assert store.cancelled(s.task_uuid, 1)
    queued = spec()
    store.insert(queued)
    assert store.request_cancel(queued.task_uuid)
    assert store.get(queued.task_uuid).state is TaskState.CANCELLED  # type: ignore[union-attr]


def test_release_all_leases_requeues_orphans(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s)
    assert store.claim("old-process", 300)
    store.release_all_leases()
    c = store.claim("new-process", 30)
    assert c and c.attempt == 2


def test_keys_and_uploads(store: SqliteJobSource) -> None:
    store.add_key("k1", "h1")
    assert store.key_hash_active("h1") and store.active_key_count() == 1
    assert store.revoke_key("k1") and not store.key_hash_active("h1")
    store.add_upload("u1", "image", "uploads/u1.png", "image/png")
    up = store.get_upload("u1")
    assert up and up.key == "uploads/u1.png"
    assert store.get_upload("nope") is None


def test_tasks_of_an_older_database_get_their_capability_queue(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    queued, checked = spec(), spec().model_copy(update={"safety_mode": "full", "safety_check": True})
    store.insert(queued)
    store.insert(checked)
    store.close()
    db = sqlite3.connect(tmp_path / "db.sqlite")  # as an earlier version left it: no queue column
    db.execute("DROP INDEX tasks_claim_queue")
    db.execute("ALTER TABLE tasks DROP COLUMN queue")
    db.commit()
    db.close()
    store = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    try:
        c = store.claim("w", 30, queues=["tiny+audio"])
        assert c and c.task_uuid == queued.task_uuid
        assert store.claim("w", 30, queues=["tiny+audio"]) is None
        c = store.claim("w", 30, queues=["tiny+audio+safety"])
        assert c and c.task_uuid == checked.task_uuid
    finally:
        store.close()


def test_the_embedded_worker_start_retires_earlier_workers(store: SqliteJobSource) -> None:
    from wanflash.jobs.capabilities import WorkerCapabilities

    old = WorkerCapabilities(profile="wan2.2-ti2v-5b", fps=24, max_clip_frames=121)
    store.publish_worker("previous-process", old, 3600)  # killed a moment ago: its record would still be live
    store.worker_started(sole=True)  # the one embedded worker alone serves this file
    (rec,) = store.workers()
    assert not rec.live(time.time()) and rec.caps == old  # last-known, not live

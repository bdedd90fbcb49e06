"""Group commit of submits and lock-free reads: a burst of submits shares transactions, each
submit keeps its own outcome, and reads never wait for the write lock (a commit's fsync)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from tests.jobs.test_store import spec
from wanflash.errors import InvalidRequest, ServiceOverloaded
from wanflash.jobs.model import TaskState
from wanflash.jobs.service import JobService
from wanflash.jobs.store import DuplicateTask, InFlightExceeded, InsertRequest, TaskStore


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path / "db.sqlite", max_attempts=2)
    yield s
    s.close()


def test_insert_many_outcomes_are_per_request(store: TaskStore) -> None:
    taken = spec()
    store.insert(taken)
    a, b, c, d = spec(), spec(), spec(), spec()
    out = store.insert_many([
        InsertRequest(a, "k", 2),
        InsertRequest(taken, "k", 2),  # duplicate: refused, the rest still go in
        InsertRequest(b, "k", 2),
        InsertRequest(c, "k", 2),  # the cap counts a and b from this same batch
        InsertRequest(d),  # no key: no cap
    ])
    assert out[0] is None and out[2] is None and out[4] is None
    assert isinstance(out[1], DuplicateTask)
    assert isinstance(out[3], InFlightExceeded) and out[3].in_flight == 2
    assert store.get(c.task_uuid) is None
    assert [store.get(s.task_uuid).state for s in (a, b, d)] == [TaskState.QUEUED] * 3  # type: ignore[union-attr]
    claims = [store.claim("w", 30) for _ in range(4)]
    assert [cl.task_uuid for cl in claims if cl] == [taken.task_uuid, a.task_uuid, b.task_uuid, d.task_uuid]


def test_reads_do_not_wait_for_the_write_lock(store: TaskStore) -> None:
    s = spec()
    store.insert(s)
    got: list[object] = []
    with store._lock:  # a writer mid-commit
        t = threading.Thread(target=lambda: got.append(store.get(s.task_uuid)))
        t.start()
        t.join(5)
        assert not t.is_alive(), "a read waited for the write lock"
    assert got and got[0].task_uuid == s.task_uuid  # type: ignore[attr-defined]


async def test_burst_of_submits_is_group_committed(store: TaskStore) -> None:
    calls: list[int] = []
    original = store.insert_many

    def counting(requests: list[InsertRequest], **kw: object) -> list[object]:
        calls.append(len(requests))
        return original(requests, **kw)  # type: ignore[arg-type]

    store.insert_many = counting  # type: ignore[method-assign]
    jobs = JobService(store)
    dup = spec()
    await jobs.submit(dup)
    specs = [spec() for _ in range(50)]
    results = await asyncio.gather(*(jobs.submit(s, key_hash="k", max_in_flight=40) for s in specs),
                                   jobs.submit(dup), return_exceptions=True)
    assert sum(calls) == 52 and len(calls) <= 4, calls  # 52 submits, a handful of transactions
    assert sum(r is None for r in results) == 40
    assert sum(isinstance(r, ServiceOverloaded) for r in results) == 10
    assert isinstance(results[-1], InvalidRequest) and results[-1].errors[0].code == "conflictTaskUUID"
    assert store.in_flight("k") == 40


async def test_io_error_fails_the_whole_batch(store: TaskStore) -> None:
    def broken(requests: list[InsertRequest], **kw: object) -> list[object]:
        raise OSError("disk I/O error")

    store.insert_many = broken  # type: ignore[method-assign]
    jobs = JobService(store)
    results = await asyncio.gather(*(jobs.submit(spec()) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert store.counts() == {}


def test_closed_store_refuses_reads(tmp_path: Path) -> None:
    s = TaskStore(tmp_path / "db.sqlite")
    s.get(str(uuid.uuid4()))  # this thread now has a read connection
    s.close()
    with pytest.raises(sqlite3.ProgrammingError):
        s.get(str(uuid.uuid4()))
    other: list[BaseException] = []

    def read() -> None:
        try:
            s.get(str(uuid.uuid4()))
        except BaseException as exc:
            other.append(exc)

    t = threading.Thread(target=read)
    t.start()
    t.join(5)
    assert other and isinstance(other[0], sqlite3.ProgrammingError)

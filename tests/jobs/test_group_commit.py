"""Group commit of submits and lock-free reads: a burst of submits shares transactions, each
submit keeps its own outcome, and reads never wait for the write lock (a commit's fsync)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks
from tests.jobs.test_store import spec
from wanflash.errors import InvalidRequest, ServiceOverloaded
from wanflash.jobs.model import TaskState
from wanflash.jobs.service import JobService
from wanflash.jobs.store import DuplicateTask, InFlightExceeded, InsertRequest, SqliteJobSource


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobSource:
    s = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks, max_attempts=2)
    yield s
    s.close()


def test_insert_many_outcomes_are_per_request(store: SqliteJobSource) -> None:
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


def test_reads_do_not_wait_for_the_write_lock(store: SqliteJobSource) -> None:
    s = spec()
    store.insert(s)
    got: list[object] = []
    with store._lock:  # a writer mid-commit
        t = threading.Thread(target=lambda: got.append(store.get(s.task_uuid)))
        t.start()
        t.join(5)
        assert not t.is_alive(), "a read waited for the write lock"
    assert got and got[0].task_uuid == s.task_uuid  # type: ignore[attr-defined]


async def test_burst_of_submits_is_group_committed(store: SqliteJobSource) -> None:
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


async def test_io_error_fails_the_whole_batch(store: SqliteJobSource) -> None:
    def broken(requests: list[InsertRequest], **kw: object) -> list[object]:
        raise OSError("disk I/O error")

    store.insert_many = broken  # type: ignore[method-assign]
    jobs = JobService(store)
    results = await asyncio.gather(*(jobs.submit(spec()) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert store.counts() == {}


def test_closed_store_refuses_reads(tmp_path: Path) -> None:
    s = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
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


class _Recording:
    """The store, recording on which thread each read and commit ran."""

    def __init__(self, store: SqliteJobSource, inline_reads: bool) -> None:
        self.store = store
        self.inline_reads = inline_reads
        self.threads: dict[str, list[str]] = {}

    def _note(self, name: str) -> None:
        self.threads.setdefault(name, []).append(threading.current_thread().name)

    def get(self, task_uuid: str) -> object:
        self._note("get")
        return self.store.get(task_uuid)

    def in_flight(self, key_hash: str) -> int:
        self._note("in_flight")
        return self.store.in_flight(key_hash)

    def insert_many(self, requests: list[InsertRequest], **kw: object) -> list[object]:
        self._note("insert_many")
        return self.store.insert_many(requests, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("inline", [True, False])
async def test_reads_skip_the_thread_hop_only_where_the_adapter_allows(store: SqliteJobSource, inline: bool) -> None:
    rec = _Recording(store, inline_reads=inline)
    jobs = JobService(rec)  # type: ignore[arg-type]
    s = spec()
    await jobs.submit(s, key_hash="k", max_in_flight=5)
    loop_thread = threading.current_thread().name
    assert (await jobs.get(s.task_uuid)).task_uuid == s.task_uuid  # type: ignore[union-attr]
    assert await jobs.exists(s.task_uuid)
    assert await jobs.in_flight("k") == 1
    reads = rec.threads["get"] + rec.threads["in_flight"]
    if inline:  # SQLite: on the event loop's own thread
        assert set(reads) == {loop_thread}
    else:  # PostgreSQL: a round trip, never on the loop
        assert loop_thread not in reads
    # Commits run on the service's own thread, never queued behind the default pool's file I/O.
    assert rec.threads["insert_many"] and all(n.startswith("wanflash-commit") for n in rec.threads["insert_many"])
    jobs.close()


def test_adapters_declare_their_reads() -> None:
    from wanflash.jobs.postgres import PostgresJobSource

    assert SqliteJobSource.inline_reads is True
    assert PostgresJobSource.inline_reads is False

"""PostgreSQL-only behaviour beyond the shared contract: procrastinate's worker heartbeat recovers
the task of a dead process long before that task's own lease runs out, and migrations repeat."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks, output
from tests.jobs.test_store import spec
from wanflash.jobs.model import TaskState
from wanflash.jobs.postgres import PostgresJobSource


def _claim_then_die(url: str, out: mp.Queue[str]) -> None:
    src = PostgresJobSource(url, outbox=no_webhooks, worker_heartbeat_seconds=0.2, stalled_worker_seconds=1.0)
    c = src.claim("doomed", 300)  # a five-minute lease
    out.put(c.task_uuid if c else "")
    time.sleep(0.5)
    os._exit(9)  # no cleanup: like SIGKILL


def test_dead_worker_is_detected_by_heartbeat_not_lease(pg_url: str) -> None:
    src = PostgresJobSource(pg_url, outbox=no_webhooks, worker_heartbeat_seconds=0.2, stalled_worker_seconds=1.0)
    try:
        s = spec()
        src.insert(s)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        p = ctx.Process(target=_claim_then_die, args=(pg_url, out))
        p.start()
        assert out.get(timeout=60) == s.task_uuid
        p.join(30)
        t0 = time.monotonic()
        claim = None
        while claim is None and time.monotonic() - t0 < 20:
            claim = src.claim("survivor", 30)
            time.sleep(0.1)
        assert claim and claim.task_uuid == s.task_uuid and claim.attempt == 2
        assert time.monotonic() - t0 < 10  # seconds, not the 300 s lease
        assert src.complete(s.task_uuid, 2, [output("v")])
        assert src.get(s.task_uuid).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        src.close()


def test_migrate_is_idempotent(pg_url: str) -> None:
    src = PostgresJobSource(pg_url, outbox=no_webhooks)
    try:
        src.migrate()
        src.migrate()
        src.insert(spec())
        assert src.counts() == {"queued": 1}
    finally:
        src.close()


def test_migrate_moves_tasks_of_the_single_queue_era_into_their_capability_queues(pg_url: str) -> None:
    import psycopg

    from wanflash.jobs.capabilities import WorkerCapabilities

    src = PostgresJobSource(pg_url, outbox=no_webhooks)
    try:
        s = spec().model_copy(update={"audio": False})
        src.insert(s)
        with psycopg.connect(pg_url) as conn:  # as an earlier version left it: no queue, its token in "video"
            conn.execute("UPDATE wanflash_tasks SET queue=NULL")
            conn.execute("UPDATE procrastinate_jobs SET queue_name='video'")
        tiny = WorkerCapabilities(profile="tiny", fps=16, max_clip_frames=81).queues()
        assert src.claim("w", 30, queues=tiny) is None  # not visible to a worker that claims by capability
        src.migrate()
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT queue FROM wanflash_tasks").fetchall() == [("tiny",)]
            assert conn.execute("SELECT queue_name FROM procrastinate_jobs").fetchall() == [("video:tiny",)]
        c = src.claim("w", 30, queues=tiny)
        assert c and c.task_uuid == s.task_uuid
    finally:
        src.close()


def test_token_queues_fit_postgres_channel_names(pg_url: str) -> None:
    src = PostgresJobSource(pg_url, outbox=no_webhooks)
    try:
        assert src.token_queue("wan2.2-i2v-a14b+audio+safety") == "video:wan2.2-i2v-a14b+audio+safety"
        long = src.token_queue("a-profile-with-a-really-long-descriptive-name+audio+safety")
        assert long.startswith("video:") and len("procrastinate_queue_v1#" + long) <= 63
        # A task in such a queue is dispatched (the NOTIFY would fail on a longer channel name) and claimed.
        s = spec().model_copy(update={"profile": "a-profile-with-a-really-long-descriptive-name"})
        src.insert(s)
        c = src.claim("w", 30, queues=["a-profile-with-a-really-long-descriptive-name+audio"])
        assert c and c.task_uuid == s.task_uuid
    finally:
        src.close()


def test_a_worker_pruned_as_stalled_registers_again(pg_url: str) -> None:
    import psycopg

    src = PostgresJobSource(pg_url, outbox=no_webhooks, worker_heartbeat_seconds=0.2, stalled_worker_seconds=1.0)
    try:
        assert src.claim("w", 30) is None  # registers this process as a procrastinate worker
        with psycopg.connect(pg_url) as conn:  # what another worker's prune does to a late heartbeat
            conn.execute("DELETE FROM procrastinate_workers")
        s = spec()
        src.insert(s)
        c = src.claim("w", 30)
        assert c and c.task_uuid == s.task_uuid
    finally:
        src.close()


def test_doctor_reads_a_live_postgres(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from wanflash.cli import main

    src = PostgresJobSource(pg_url, outbox=no_webhooks)
    try:
        src.migrate()
        src.insert(spec())
    finally:
        src.close()
    monkeypatch.setenv("WANFLASH_DATABASE_URL", pg_url)
    main(["doctor", "--data-dir", str(tmp_path), "--profile", "tiny"])
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["ok", "database"] and "1 queued" in line for line in out.splitlines()), out

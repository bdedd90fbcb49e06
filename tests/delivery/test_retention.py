"""Media lifetime: a finished task's own inputs and outputs are deleted after its links expire plus the
grace, uploads and unexpired tasks are kept, storage errors are retried, and the service sweeps at start."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tests.jobs.records import no_webhooks, output
from tests.jobs.test_store import spec
from wanflash.api.auth import hash_key
from wanflash.compose import build_app
from wanflash.config import JobsConfig, Settings
from wanflash.delivery.retention import MediaSweeper, build, task_keys
from wanflash.jobs.source import db_path
from wanflash.jobs.store import SqliteJobSource
from wanflash.observability.metrics import Metrics
from wanflash.storage.base import StorageUnavailable
from wanflash.storage.local import LocalStore

GRACE = 100


def finished_task(store: SqliteJobSource, media: LocalStore, *, finished: float, ttl: int | None = 60,
                  image_key: str | None = None, key_hash: str | None = None) -> str:
    """A task completed at ``finished`` with two outputs and its own input image and audio stored."""
    s = spec()
    tu = s.task_uuid
    s = s.model_copy(update={"ttl": ttl, "image_key": image_key or f"inputs/{tu}/image.png",
                             "audio_key": f"inputs/{tu}/audio.wav"})
    media.put_bytes(s.image_key, b"png")  # type: ignore[arg-type]
    media.put_bytes(s.audio_key, b"wav")  # type: ignore[arg-type]
    results = []
    for i in range(2):
        media.put_bytes(f"outputs/{tu}/{i}.mp4", b"mp4")
        results.append(output(f"v{i}", seed=i, key=f"outputs/{tu}/{i}.mp4"))
    store.insert(s, now=finished - 10, key_hash=key_hash)
    c = store.claim("w", 30, now=finished - 5)
    assert c and store.complete(tu, c.attempt, results, now=finished)
    return tu


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobSource:
    s = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    yield s
    s.close()


@pytest.fixture
def media(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "media")


def files(media: LocalStore) -> list[str]:
    # os.walk, not rglob: a directory the service's sweep removes mid-walk is skipped, not an error.
    return sorted(os.path.relpath(os.path.join(d, f), media.root) for d, _, fs in os.walk(media.root) for f in fs)


async def test_sweeps_own_media_after_expiry_plus_grace(store: SqliteJobSource, media: LocalStore) -> None:
    media.put_bytes("uploads/u1.png", b"shared")
    old = finished_task(store, media, finished=1000)
    # A task whose image came from an upload (a key it does not own): that file is never deleted.
    borrowed = finished_task(store, media, finished=1001, image_key="uploads/u1.png")
    fresh = finished_task(store, media, finished=5000)
    metrics = Metrics()
    now = [1001 + 60 + GRACE - 1]
    sweeper = MediaSweeper(store, media, default_ttl=3600, grace=GRACE, metrics=metrics, clock=lambda: now[0])

    assert await sweeper.run_once() == 1  # only `old`: `borrowed` is one second short of its grace
    assert not any(old in f for f in files(media))
    assert not (media.root / "outputs" / old).exists() and not (media.root / "inputs" / old).exists()
    assert (media.root / "outputs").is_dir()  # top-level directories stay for concurrent writers

    now[0] += 1
    assert await sweeper.run_once() == 1
    left = files(media)
    assert "uploads/u1.png" in left and not any(borrowed in f for f in left)
    assert sum(fresh in f for f in left) == 4  # links still valid: everything kept
    assert await sweeper.run_once() == 0
    assert metrics.media_deleted._value.get() == 2
    rec = store.get(old)  # the row stays for polls
    assert rec is not None and rec.results and rec.results[0].key == f"outputs/{old}/0.mp4"


def test_task_keys_are_only_the_tasks_own(store: SqliteJobSource, media: LocalStore) -> None:
    tu = finished_task(store, media, finished=1000, image_key="uploads/u1.png")
    rec = store.get(tu)
    assert rec is not None
    assert sorted(task_keys(rec)) == [f"inputs/{tu}/audio.wav", f"outputs/{tu}/0.mp4", f"outputs/{tu}/1.mp4"]


async def test_storage_errors_leave_the_task_due(store: SqliteJobSource, media: LocalStore) -> None:
    tu = finished_task(store, media, finished=1000)

    class Down(LocalStore):
        def delete(self, key: str) -> None:
            raise StorageUnavailable("S3 delete failed: ServiceUnavailable")

    down = MediaSweeper(store, Down(media.root), default_ttl=3600, grace=GRACE, clock=lambda: 10**6)
    assert await down.run_once() == 0
    assert [r.task_uuid for r in store.media_due(10**6, default_ttl=3600, grace=GRACE)] == [tu]
    assert await MediaSweeper(store, media, default_ttl=3600, grace=GRACE, clock=lambda: 10**6).run_once() == 1
    assert files(media) == []


async def test_a_pass_works_through_every_batch(store: SqliteJobSource, media: LocalStore) -> None:
    for i in range(5):
        finished_task(store, media, finished=1000 + i)
    sweeper = MediaSweeper(store, media, default_ttl=3600, grace=GRACE, batch=2, clock=lambda: 10**6)
    assert await sweeper.run_once() == 5 and files(media) == []


async def test_uploads_go_after_the_retention_since_last_use(store: SqliteJobSource, media: LocalStore) -> None:
    day = 86400
    for name, created in (("unused", 0), ("reused", 0), ("recent", 20 * day)):
        media.put_bytes(f"uploads/{name}.png", b"png")
        store.add_upload(name, "image", f"uploads/{name}.png", "image/png", now=created)
    store.touch_upload("reused", now=25 * day)  # a task referenced it on day 25
    metrics = Metrics()
    sweeper = MediaSweeper(store, media, default_ttl=3600, grace=None, upload_retention=30 * day, metrics=metrics,
                           clock=lambda: 31 * day)
    assert await sweeper.run_once() == 1
    assert files(media) == ["uploads/recent.png", "uploads/reused.png"]
    assert store.get_upload("unused") is None and store.get_upload("reused") is not None
    assert metrics.uploads_deleted._value.get() == 1
    sweeper.clock = lambda: 56 * day
    assert await sweeper.run_once() == 2 and files(media) == []


def test_settings_choose_the_sweeper(tmp_path: Path) -> None:
    store = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    media = LocalStore(tmp_path / "media")
    assert build(JobsConfig(media_grace_seconds=-1, upload_retention_seconds=-1), store, media) is None
    s = build(JobsConfig(media_grace_seconds=7, media_sweep_seconds=9, default_ttl_seconds=99), store, media)
    assert s is not None and (s.grace, s.interval, s.default_ttl, s.upload_retention) == (7, 9, 99, 30 * 86400)
    s = build(JobsConfig(media_grace_seconds=-1), store, media)
    assert s is not None and s.grace is None  # uploads only
    store.close()


def test_the_service_sweeps_at_startup(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys="k")
    store = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)
    media = LocalStore(tmp_path / "media")
    long_ago = time.time() - 7 * 86400
    tu = finished_task(store, media, finished=long_ago, key_hash=hash_key("k"))  # submitted with key "k"
    store.close()
    assert files(media)
    with TestClient(build_app(settings, worker=False)) as client:
        deadline = time.monotonic() + 10
        while files(media) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert files(media) == []
        # Polls still answer for the swept task, with the same items (their links long expired).
        r = client.post("/v1", json=[{"taskType": "getResponse", "taskUUID": tu}],
                        headers={"Authorization": "Bearer k"})
        assert r.status_code == 200
        (item,) = [i for i in r.json()["data"] if i["videoUUID"] == "v0"]
        assert item["status"] == "success" and item["taskUUID"] == tu
        link = urlsplit(item["videoURL"])
        assert client.get(f"{link.path}?{link.query}").status_code == 410
    store = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)
    rec = store.get(tu)
    assert rec is not None and rec.state.value == "succeeded"
    assert store.media_due(time.time(), default_ttl=3600, grace=0) == []
    store.close()

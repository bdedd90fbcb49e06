"""The supervisor says what it serves: it publishes its capabilities while it runs, claims only
from its queues, and refuses a spec planned for another profile before running anything."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from tests.jobs.records import no_webhooks
from wanflash.config import Settings
from wanflash.jobs.model import JobSpec, TaskState
from wanflash.jobs.store import SqliteJobSource
from wanflash.storage.local import LocalStore
from wanflash.worker.executor import create_executor
from wanflash.worker.supervisor import Supervisor, capabilities_for


def spec(profile: str = "tiny", fps: int = 16) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model="alibaba:wan@2.6-flash", profile=profile, positive_prompt="p",
                   width=128, height=72, resolution_class="720p", duration=1, fps=fps, num_frames=fps, seeds=[1],
                   cost=0.1, audio=False)


def supervisor(tmp_path: Path, store: SqliteJobSource, **kw: object) -> Supervisor:
    settings = Settings(data_dir=tmp_path, heartbeat_seconds=0.1, lease_seconds=1, **kw)  # type: ignore[arg-type]
    return Supervisor(settings, store, LocalStore(tmp_path / "media"),
                      create_executor(settings, "wanflash.worker.executor:fake_pipeline", kind="inprocess"),
                      poll_seconds=0.05)


async def wait_for(pred: object, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_publishes_while_running_and_withdraws_at_stop(tmp_path: Path) -> None:
    store = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    sup = supervisor(tmp_path, store, profile="wan2.2-ti2v-5b", audio_model="none")
    sup.start()
    try:
        (rec,) = store.workers()
        assert rec.worker_id == sup.owner and rec.caps == capabilities_for(sup.settings) and rec.caps.fps == 24
        first = rec.seen
        await wait_for(lambda: store.workers()[0].seen > first)  # refreshed every heartbeat
        await asyncio.sleep(1.2)  # longer than the 1 s ttl: still live, since it keeps publishing
        assert store.workers()[0].live(time.time())
    finally:
        await sup.stop()
        (rec,) = store.workers()
        assert not rec.live(time.time())  # stopped: known, no longer live
        store.close()


async def test_claims_only_its_profile_and_refuses_a_foreign_spec(tmp_path: Path) -> None:
    store = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    sup = supervisor(tmp_path, store, profile="wan2.2-ti2v-5b", audio_model="none")
    tiny, five_b = spec(), spec("wan2.2-ti2v-5b", 24)
    store.insert(tiny)
    store.insert(five_b)
    sup.start()
    try:
        await wait_for(lambda: store.get(five_b.task_uuid).state.terminal)  # type: ignore[union-attr]
        rec = store.get(five_b.task_uuid)
        assert rec and rec.state is TaskState.SUCCEEDED and rec.results and rec.results[0].frames == 24
        await asyncio.sleep(0.3)
        assert store.get(tiny.task_uuid).state is TaskState.QUEUED  # type: ignore[union-attr]  # not its queue
        # A claim made without the queue filter (an older worker, a hand-made claim): refused, not run.
        claim = store.claim("elsewhere", 30)
        assert claim and claim.task_uuid == tiny.task_uuid
        await sup.process(claim)
        rec = store.get(tiny.task_uuid)
        assert rec and rec.state is TaskState.FAILED and rec.error_code == "profileMismatch"
        assert "planned for profile tiny (16 fps)" in (rec.error_message or "")
        assert not (tmp_path / "media" / "outputs" / tiny.task_uuid).exists()
    finally:
        await sup.stop()
        store.close()


async def test_progress_is_stored_off_the_event_loop_and_before_completion(tmp_path: Path) -> None:
    import threading

    class Recording(SqliteJobSource):
        def __init__(self, path: Path) -> None:
            super().__init__(path, outbox=no_webhooks)
            self.progress_threads: list[int] = []
            self.order: list[str] = []

        def progress(self, *a: object, **kw: object) -> bool:  # type: ignore[override]
            self.progress_threads.append(threading.get_ident())
            self.order.append("progress")
            return super().progress(*a, **kw)  # type: ignore[arg-type]

        def complete(self, *a: object, **kw: object) -> bool:  # type: ignore[override]
            self.order.append("complete")
            return super().complete(*a, **kw)  # type: ignore[arg-type]

    store = Recording(tmp_path / "db.sqlite")
    sup = supervisor(tmp_path, store)
    s = spec()
    store.insert(s)
    sup.start()
    try:
        await wait_for(lambda: (r := store.get(s.task_uuid)) is not None and r.state.terminal)
    finally:
        await sup.stop()
    rec = store.get(s.task_uuid)
    assert rec is not None and rec.state is TaskState.SUCCEEDED
    assert store.progress_threads and threading.get_ident() not in store.progress_threads
    assert store.order[-1] == "complete" and "progress" in store.order  # the last step was stored first
    assert rec.progress_step == rec.progress_total
    store.close()

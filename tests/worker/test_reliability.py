"""Durability through the supervisor: SIGKILLed worker (one output set, one webhook per result),
hung job killed at its deadline with the slot freed, disk full (storageFull, no partial file),
and uploadEndpoint (403 fails the task with uploadFailed; the first result is PUT)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from pathlib import Path

import pytest

from tests.delivery.receiver import receiver
from tests.worker.test_executor import FIX, Rig, spec
from wanflash.delivery.outbox import OutboxDeliverer, make_renderer
from wanflash.delivery.webhook import WebhookSender
from wanflash.jobs.model import TaskState
from wanflash.signing import generate_secret


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_worker_sigkill_mid_job_runs_again_once_with_one_webhook_per_result(tmp_path: Path) -> None:
    with receiver() as rx:
        rig = Rig(tmp_path, f"{FIX}:slow", executor="subprocess", allow_loopback_fetch=True,
                  outbox=make_renderer(lambda k, e: f"http://h/{k}", 3600))
        d = OutboxDeliverer(rig.store, WebhookSender(generate_secret(), allow_loopback=True), poll_seconds=0.05)
        s = spec(n=2).model_copy(update={"webhook_url": rx.url + "/hook"})
        rig.store.insert(s)
        rig.sup.start()
        d.start()
        try:
            for _ in range(600):
                rec = rig.store.get(s.task_uuid)
                if rec and rec.progress_step > 0:
                    break
                await asyncio.sleep(0.05)
            assert rec and rec.state is TaskState.RUNNING and rec.attempt == 1
            os.kill(rig.sup.executor.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            rec = await rig.wait(s.task_uuid)
            for _ in range(100):
                if len(rx.requests) >= 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            await d.stop()
            await rig.sup.stop()
    assert rec.state is TaskState.SUCCEEDED and rec.attempt == 2  # type: ignore[attr-defined]
    outputs = files_under(tmp_path / "media" / "outputs")
    assert sorted(p.name for p in outputs) == ["0.mp4", "1.mp4"]
    assert sorted(r.headers["webhook-id"] for r in rx.requests) == [f"msg_{s.task_uuid}_0", f"msg_{s.task_uuid}_1"]


async def test_hung_job_killed_at_deadline_and_slot_freed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"{FIX}:hang_if", executor="subprocess", job_deadline_seconds=2.0)
    hung, nxt = spec("hang"), spec("fine")
    rig.store.insert(hung)
    rig.store.insert(nxt)
    rig.sup.start()
    try:
        rec = await rig.wait(hung.task_uuid, timeout=30)
        assert rec.state is TaskState.FAILED and rec.error_code == "timeout"  # type: ignore[attr-defined]
        rec = await rig.wait(nxt.task_uuid, timeout=30)  # the killed child was replaced
        assert rec.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()


async def test_a_model_load_does_not_count_against_the_deadline(tmp_path: Path) -> None:
    """A load slower than the deadline (real weights, a replaced child) must not kill every job, forever."""
    rig = Rig(tmp_path, f"{FIX}:sleepy_load", executor="inprocess", job_deadline_seconds=1.0)
    s = spec()
    rig.store.insert(s)
    rig.sup.start()
    try:
        rec = await rig.wait(s.task_uuid, timeout=30)
        assert rec.state is TaskState.SUCCEEDED, rec  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()


async def test_disk_full_fails_with_storage_full_and_leaves_no_partial_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import wanflash.storage.local as local

    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # file 1 and its directory synced; the second output's data hits ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", fsync)
    rig = Rig(tmp_path, f"{FIX}:hang_if")
    full, nxt = spec(n=2), spec()
    rig.store.insert(full)
    rig.sup.start()
    try:
        rec = await rig.wait(full.task_uuid)
        assert rec.state is TaskState.FAILED and rec.error_code == "storageFull"  # type: ignore[attr-defined]
        assert rec.attempt == 1 and "disk space" in rec.error_message  # type: ignore[attr-defined]
        assert files_under(tmp_path / "media" / "outputs" / full.task_uuid) == []  # no .tmp-, no lone 0.mp4
        rig.store.insert(nxt)
        rig.sup.wake.set()
        rec = await rig.wait(nxt.task_uuid)
        assert rec.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()


async def test_upload_endpoint_403_fails_task_and_200_receives_first_result(tmp_path: Path) -> None:
    with receiver() as rx:
        rx.statuses = [403]
        rig = Rig(tmp_path, f"{FIX}:hang_if", allow_loopback_fetch=True)
        bad = spec().model_copy(update={"upload_endpoint": rx.url + "/bucket/a.mp4?X-Amz-Signature=x"})
        good = spec(n=2).model_copy(update={"upload_endpoint": rx.url + "/bucket/b.mp4"})
        rig.store.insert(bad)
        rig.sup.start()
        try:
            rec = await rig.wait(bad.task_uuid)
            assert rec.state is TaskState.FAILED and rec.error_code == "uploadFailed"  # type: ignore[attr-defined]
            assert "403" in rec.error_message and rec.attempt == 1  # type: ignore[attr-defined]
            rig.store.insert(good)
            rig.sup.wake.set()
            rec = await rig.wait(good.task_uuid)
            assert rec.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
        finally:
            await rig.sup.stop()
    puts = [r for r in rx.requests if r.path == "/bucket/b.mp4"]
    assert len(puts) == 1 and puts[0].method == "PUT" and puts[0].headers["content-type"] == "video/mp4"
    assert puts[0].body == (tmp_path / "media" / "outputs" / good.task_uuid / "0.mp4").read_bytes()

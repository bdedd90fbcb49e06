"""Executors and the supervisor: restart after a dead child, fenced re-queue, cancel, failures."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks
from wanflash.config import Settings
from wanflash.errors import ExecutorDead, JobFailed
from wanflash.jobs.model import JobSpec, TaskState
from wanflash.jobs.source import OutboxRenderer
from wanflash.jobs.store import SqliteJobSource
from wanflash.storage.local import LocalStore
from wanflash.worker.executor import InProcessExecutor, SubprocessExecutor, create_executor
from wanflash.worker.protocol import Done, RunJob
from wanflash.worker.supervisor import Supervisor

FIX = "tests.worker.fixture_pipelines"


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, heartbeat_seconds=0.2, lease_seconds=5, **kw)  # type: ignore[arg-type]


def spec(prompt: str = "p", n: int = 1) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model="alibaba:wan@2.6-flash", profile="tiny", positive_prompt=prompt,
                   width=128, height=72, resolution_class="720p", duration=1, fps=8, num_frames=8,
                   seeds=list(range(1, n + 1)), number_results=n, cost=0.1, audio=False)


def job(tmp_path: Path, s: JobSpec) -> RunJob:
    out = tmp_path / s.task_uuid
    out.mkdir()
    return RunJob(task_uuid=s.task_uuid, attempt=1, spec_json=s.model_dump_json(), out_dir=str(out))


async def test_subprocess_executor_restarts_after_child_dies(tmp_path: Path) -> None:
    ex = SubprocessExecutor(settings(tmp_path), f"{FIX}:exit_once")
    ex.start()
    await ex.wait_ready()
    first_pid = ex.pid
    with pytest.raises(ExecutorDead):
        await ex.run(job(tmp_path, spec()), lambda p: None)
    done = await ex.run(job(tmp_path, spec(n=2)), lambda p: None)
    assert isinstance(done, Done) and len(done.outputs) == 2
    assert ex.pid != first_pid and ex.restarts == 1
    assert all(Path(o.path).stat().st_size > 0 for o in done.outputs)
    await ex.stop()


async def test_load_failure_is_model_not_ready(tmp_path: Path) -> None:
    for ex in (SubprocessExecutor(settings(tmp_path), f"{FIX}:fail_to_load"),
               InProcessExecutor(settings(tmp_path), f"{FIX}:fail_to_load")):
        with pytest.raises(JobFailed) as info:
            await ex.run(job(tmp_path, spec()), lambda p: None)
        assert info.value.code == "modelNotReady" and ex.state == "failed"
        await ex.stop()


def test_create_executor_by_name(tmp_path: Path) -> None:
    assert create_executor(settings(tmp_path), kind="inprocess").name == "inprocess"
    assert create_executor(settings(tmp_path)).name == "subprocess"
    with pytest.raises(ValueError):
        create_executor(settings(tmp_path), kind="ray")


class Rig:
    def __init__(self, tmp_path: Path, factory: str, executor: str = "inprocess", *,
                 outbox: OutboxRenderer = no_webhooks, **kw: object) -> None:
        self.settings = settings(tmp_path, max_attempts=2, **kw)
        self.store = SqliteJobSource(tmp_path / "db.sqlite", outbox=outbox, max_attempts=2)
        self.storage = LocalStore(tmp_path / "media")
        self.sup = Supervisor(self.settings, self.store, self.storage,
                              create_executor(self.settings, factory, kind=executor), poll_seconds=0.05)

    async def wait(self, tu: str, timeout: float = 60) -> object:
        for _ in range(int(timeout / 0.05)):
            rec = self.store.get(tu)
            if rec and rec.state.terminal:
                return rec
            await asyncio.sleep(0.05)
        raise AssertionError(f"task {tu} not finished: {self.store.get(tu)}")


async def test_supervisor_requeues_when_child_dies(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"{FIX}:exit_once", executor="subprocess")
    s = spec(n=2)
    rig.store.insert(s)
    rig.sup.start()
    try:
        rec = await rig.wait(s.task_uuid)
    finally:
        await rig.sup.stop()
    assert rec.state is TaskState.SUCCEEDED and rec.attempt == 2  # type: ignore[attr-defined]
    keys = [r.key for r in rec.results]  # type: ignore[attr-defined]
    assert keys == [f"outputs/{s.task_uuid}/0.mp4", f"outputs/{s.task_uuid}/1.mp4"]
    assert all(rig.storage.exists(k) for k in keys)
    assert len({r.video_uuid for r in rec.results}) == 2  # type: ignore[attr-defined]


async def test_supervisor_failures_and_cancel(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"{FIX}:broken")
    bad, transient = spec("boom"), spec("retry")
    rig.store.insert(bad)
    rig.store.insert(transient)
    rig.sup.start()
    try:
        rec = await rig.wait(bad.task_uuid)
        assert rec.state is TaskState.FAILED and rec.error_code == "inferenceError"  # type: ignore[attr-defined]
        assert "boom" in rec.error_message and rec.attempt == 1  # type: ignore[attr-defined]
        rec = await rig.wait(transient.task_uuid)
        assert rec.state is TaskState.FAILED and rec.attempt == 2  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()


async def test_cancel_running_task(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"{FIX}:slow")
    s = spec()
    rig.store.insert(s)
    rig.sup.start()
    try:
        for _ in range(200):
            rec = rig.store.get(s.task_uuid)
            if rec and rec.progress_step > 0:
                break
            await asyncio.sleep(0.05)
        assert rec and rec.state is TaskState.RUNNING and rec.progress_total == 200
        rig.store.request_cancel(s.task_uuid)
        rec = await rig.wait(s.task_uuid, timeout=10)
        assert rec.state is TaskState.CANCELLED  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()


async def test_deadline_fails_with_timeout(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"{FIX}:slow", job_deadline_seconds=0.3)
    s = spec()
    rig.store.insert(s)
    rig.sup.start()
    try:
        rec = await rig.wait(s.task_uuid, timeout=15)
        assert rec.state is TaskState.FAILED and rec.error_code == "timeout"  # type: ignore[attr-defined]
    finally:
        await rig.sup.stop()

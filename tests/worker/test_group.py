"""Worker groups on CPU: two gloo ranks of one group, a real job store, a recording fake pipeline.

One group is started once and driven through three jobs: a normal job (rank 0 claims, broadcasts
spec and image, both ranks generate the same thing, rank 0 alone stores), a cancelled one (both
ranks stop at the same step), and one during which rank 1 is SIGKILLed (the whole group restarts,
the lease expires, the job is retried and completes). Context parallelism itself is tested with
the tiny model in tests/pipelines/test_parallel.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.jobs.records import no_webhooks
from wanflash import MODEL_ID
from wanflash.config import Settings
from wanflash.jobs.model import JobSpec, TaskState
from wanflash.jobs.store import TaskRecord
from wanflash.storage.local import LocalStore
from wanflash.worker.group import GroupRunner, default_source, run_group, supervise

pytest.importorskip("torch")


def spec(prompt: str, *, image_key: str | None = None, seed: int = 11, webhook_url: str | None = None) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt=prompt,
                   width=64, height=48, resolution_class="720p", duration=1, fps=8, num_frames=8,
                   image_key=image_key, seeds=[seed], audio=False, prompt_extend=False, cost=0.0,
                   webhook_url=webhook_url)


def rows(data: Path, rank: int, task: str) -> list[dict[str, Any]]:
    path = data / f"rank{rank}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["task"] == task]


def wait_for(what: str, cond: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[Settings, GroupRunner]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path, lease_seconds=2.0, heartbeat_seconds=0.3, max_attempts=3,
                        worker_metrics_port=port)
    runner = GroupRunner(settings, ["cpu", "cpu"], factory="tests.worker.fixture_pipelines:rank_recorder")
    stop = threading.Event()
    thread = threading.Thread(target=supervise, args=([runner], stop, 0.2), daemon=True)
    thread.start()
    try:
        yield settings, runner
    finally:
        stop.set()
        thread.join(30)


def test_group_broadcasts_agrees_on_cancel_and_restarts(group: tuple[Settings, GroupRunner]) -> None:
    settings, runner = group
    data = Path(settings.data_dir)
    store = default_source(settings, outbox=no_webhooks)

    def done(tu: str) -> TaskRecord | None:
        r = store.get(tu)
        return r if r is not None and r.state not in (TaskState.QUEUED, TaskState.RUNNING) else None

    # 1. A normal job with a start image: same spec and image on both ranks, one stored output.
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, format="PNG")
    a = spec("a green card", image_key="inputs/a/image.png", webhook_url="http://127.0.0.1:9/hook")
    LocalStore(data / "media").put_bytes("inputs/a/image.png", png.getvalue())
    store.insert(a)
    rec = wait_for("job a", lambda: done(a.task_uuid), timeout=90)
    assert rec.state is TaskState.SUCCEEDED, (rec.error_code, rec.error_message)
    (result,) = rec.results or []
    assert (result.width, result.height, result.frames, result.seed) == (64, 48, 8, 11)
    assert (data / "media" / result.key).is_file()
    seen0, seen1 = rows(data, 0, a.task_uuid), rows(data, 1, a.task_uuid)
    assert seen0[0] == seen1[0] == {"task": a.task_uuid, "seeds": [11], "prompt": "a green card", "image": [40, 30]}
    assert [r["step"] for r in seen0[1:]] == [r["step"] for r in seen1[1:]] == [1, 2]
    # The leader queued the webhook in the completing transaction, linking to the stored output.
    (hook,) = store.outbox_rows(a.task_uuid)  # type: ignore[attr-defined]
    assert f"/media/{result.key}?" in json.loads(hook["body"])["videoURL"]
    # The leader serves the group's metrics on the group's port.
    text = httpx.get(f"http://127.0.0.1:{settings.observability.worker_metrics_port}/metrics", timeout=5).text
    assert 'wanflash_stage_duration_seconds_count{stage="upload"} 1.0' in text

    # 2. Cancel while running: only rank 0 learns it, yet both ranks stop after the same step.
    b = spec("a slow cancelled one")
    store.insert(b)
    wait_for("job b running", lambda: (r := store.get(b.task_uuid)) and r.progress_step >= 3)
    assert store.request_cancel(b.task_uuid)
    rec = wait_for("job b cancelled", lambda: done(b.task_uuid))
    assert rec.state is TaskState.CANCELLED
    last0, last1 = rows(data, 0, b.task_uuid)[-1]["step"], rows(data, 1, b.task_uuid)[-1]["step"]
    assert last0 == last1 and 3 <= last0 < 30

    # 3. Rank 1 dies mid-job: the whole group restarts and the job is retried to completion.
    c = spec("a slow survivor")
    store.insert(c)
    wait_for("job c running", lambda: (r := store.get(c.task_uuid)) and r.progress_step >= 2)
    old = [p.pid for p in runner.procs]
    os.kill(old[1], signal.SIGKILL)
    rec = wait_for("job c", lambda: done(c.task_uuid), timeout=120)
    assert rec.state is TaskState.SUCCEEDED and rec.attempt == 2, (rec.state, rec.attempt, rec.error_message)
    assert runner.restarts == 1 and not {p.pid for p in runner.procs} & set(old)
    assert rows(data, 1, c.task_uuid)[-1]["step"] == 30  # the new rank 1 ran the retry to the end
    store.close()


def test_run_group_checks_the_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        run_group(Settings(data_dir=tmp_path), gpus=["0", "1", "2"], group_size=2)


def test_ranks_split_the_real_audio_wrapper(tmp_path: Path) -> None:
    """Native audio is on by default, so a rank's pipeline is the audio wrapper around the Wan one:
    the transformers context parallelism splits must be found through it (else every rank renders
    the whole job)."""
    pytest.importorskip("diffusers")
    from wanflash.pipelines.audio import AudioVideoPipeline
    from wanflash.pipelines.registry import create_pipeline
    from wanflash.worker.group import split_targets

    # tiny's default stack: the audio-to-video stage around the native-audio wrapper around Wan.
    pipe = create_pipeline(Settings(data_dir=tmp_path, profile="tiny", device="cpu"))
    audio = pipe.video
    assert isinstance(audio, AudioVideoPipeline)
    pipe.load()
    targets = split_targets(pipe)
    assert len(targets) == 4  # the tiny model's I2V and T2V experts
    assert {id(t) for t in targets} == {id(t) for t in audio.video.transformers()}
    assert all(type(t).__name__ == "WanTransformer3DModel" for t in targets)


def test_wanflash_worker_with_groups_exits_0_when_the_groups_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wanflash worker --group-size 2` returns the exit status once its groups stop (SIGTERM): run_group
    returns nothing, and the status must not be built from that."""
    from wanflash.worker import distributed, group

    seen: list[tuple[list[str], int]] = []
    monkeypatch.setattr(group, "run_group", lambda settings, gpus, group_size: seen.append((gpus, group_size)))
    settings = Settings(data_dir=tmp_path, database_url="postgresql://unused")
    assert distributed.run_worker(settings, gpus=["0", "1"], group_size=2) == 0
    assert seen == [(["0", "1"], 2)]

"""Worker groups on two CUDA GPUs (NCCL): skipped unless 2 GPUs are visible. Never run by the
author (no multi-GPU machine was available): see the README's multi-GPU notes.

1. Context parallelism through diffusers' public ``enable_parallelism`` (Ulysses, degree 2) on the
   tiny model: both ranks produce the same frames, equal to one GPU's result; 1280x720 gives an odd
   token count, so this also runs the uneven-shard (``ulysses_anything``) path gloo cannot.
2. ``GroupRunner`` end to end: a group on GPUs 0,1 claims a task from the store, and rank 0 stores
   the video.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs 2 CUDA GPUs")]


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from wanflash.config import Settings

    return Settings(data_dir=tmp_path, profile="tiny", dtype="float32", lease_seconds=10, heartbeat_seconds=1)


def test_context_parallel_k2_matches_one_gpu(tmp_path: Path) -> None:
    from PIL import Image

    from tests.pipelines.conftest import make_spec
    from tests.pipelines.test_parallel import check_two_ranks
    from wanflash.pipelines.registry import create_pipeline

    settings = _settings(tmp_path)
    engine = create_pipeline(settings.replace(device="cuda:0"))
    engine.load()
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    (tmp_path / "out").mkdir()
    check_two_ranks(engine, settings, ["0", "1"], make_spec(seeds=[3]), image, tmp_path / "out", tolerance=3)


def test_group_runner_on_two_gpus(tmp_path: Path) -> None:
    import threading

    from wanflash import MODEL_ID
    from wanflash.jobs.model import JobSpec, TaskState
    from wanflash.worker.group import GroupRunner, sqlite_source, supervise

    settings = _settings(tmp_path)
    store = sqlite_source(settings)
    spec = JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt="a cat",
                   width=1280, height=720, resolution_class="720p", duration=2, fps=16, num_frames=32,
                   seeds=[5], audio=False, prompt_extend=False, cost=0.0)
    store.insert(spec)
    runner = GroupRunner(settings, ["0", "1"])
    stop = threading.Event()
    thread = threading.Thread(target=supervise, args=([runner], stop, 0.5), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rec = store.get(spec.task_uuid)
            if rec is not None and rec.state not in (TaskState.QUEUED, TaskState.RUNNING):
                break
            time.sleep(0.5)
        assert rec is not None and rec.state is TaskState.SUCCEEDED, rec
        assert rec.results and rec.results[0]["frames"] == 32 and runner.restarts == 0
    finally:
        stop.set()
        thread.join(60)
        store.close()

"""The tiny pipeline on CUDA (bf16), skipped where there is no GPU."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.gpu


def test_tiny_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from PIL import Image

    from wanflash import MODEL_ID
    from wanflash.config import Settings
    from wanflash.jobs.model import JobSpec
    from wanflash.media.encode import encode_video
    from wanflash.media.probe import probe_file
    from wanflash.pipelines.registry import create_pipeline

    pipe = create_pipeline(Settings(data_dir=tmp_path, device="cuda", dtype="bfloat16"))
    pipe.load()
    assert pipe.video.i2v.transformer.device.type == "cuda"  # the Wan pipeline inside the native-audio wrapper
    spec = JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt="a cat",
                   width=1280, height=720, resolution_class="720p", duration=6, fps=16, num_frames=96,
                   image_key="img", seeds=[1, 2], number_results=2, cost=0.0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    first = pipe.generate(spec, image=image)
    again = pipe.generate(spec, image=image)
    assert [v.shape for v in first.videos] == [(96, 720, 1280, 3)] * 2
    assert np.array_equal(first.videos[0], again.videos[0])
    assert not np.array_equal(first.videos[0], first.videos[1])
    # What /metrics reports as wanflash_gpu_memory_bytes after a job.
    stats = pipe.memory_stats()
    assert stats["device"].startswith("cuda")
    assert 0 < stats["allocated"] <= stats["reserved"] <= stats["device_used"] <= stats["device_total"]
    assert stats["peak_allocated"] >= stats["allocated"]
    track = first.audio[0]  # the default tiny audio backend (ACE-Step), on CUDA
    assert track is not None and track.samples.shape == (2, 6 * track.rate) and np.isfinite(track.samples).all()
    encode_video(first.videos[0], tmp_path / "gpu.mp4", fps=16, fmt="MP4", quality=95, audio=track)
    info = probe_file(tmp_path / "gpu.mp4")
    assert (info.width, info.height, info.frames) == (1280, 720, 96)
    assert (info.audio_codec, info.audio_rate) == ("aac", 48000)

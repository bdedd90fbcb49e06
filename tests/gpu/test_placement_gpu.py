"""Where each memory plan leaves the tiny model's weights on CUDA (skipped where there is no GPU).

The CPU tests (tests/pipelines/test_placement.py) check hooks and dtypes; only a GPU can show the
devices: resident modules on CUDA, offloaded ones in CPU memory between uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.gpu


def device_of(module) -> str:
    return next(module.parameters()).device.type


@pytest.mark.parametrize(("plan", "resident", "in_cpu_memory"), [
    ("full", {"text_encoder", "transformer", "vae"}, set()),
    ("text_encoder_cpu", {"transformer", "vae"}, {"text_encoder"}),
    ("group_offload", set(), {"text_encoder", "transformer", "vae"}),
    ("model_offload", set(), {"text_encoder", "transformer", "vae"}),  # after a job: all offloaded again
])
def test_plan_places_weights(plan: str, resident: set[str], in_cpu_memory: set[str], tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from PIL import Image

    from tests.pipelines.conftest import make_spec
    from wanflash.config import Settings
    from wanflash.pipelines.registry import create_pipeline

    pipe = create_pipeline(Settings(data_dir=tmp_path, device="cuda", dtype="bfloat16", audio_model="none",
                                    memory=plan))
    pipe.load()
    spec = make_spec(duration=2).model_copy(update={"num_frames": 5})
    out = pipe.generate(spec, image=Image.fromarray(np.zeros((48, 64, 3), np.uint8)))
    assert out.videos[0].shape[0] == 5
    for name in resident:
        assert device_of(getattr(pipe.i2v, name)) == "cuda", name
    for name in in_cpu_memory:
        assert device_of(getattr(pipe.i2v, name)) == "cpu", name
    assert pipe.memory_stats()["peak_allocated"] > 0

"""One tiny model and one loaded engine for the whole session (built offline in a temp dir)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from wanflash import MODEL_ID  # noqa: E402
from wanflash.config import Settings  # noqa: E402
from wanflash.contract.validation import SIZE_CLASS  # noqa: E402
from wanflash.jobs.model import JobSpec  # noqa: E402


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # The bare Wan engine: the native-audio and audio-to-video stages have their own tests
    # (test_audio.py, test_s2v*.py).
    return Settings(data_dir=tmp_path_factory.mktemp("wanflash-data"), profile="tiny", device="cpu",
                    audio_model="none", a2v_model="none")


@pytest.fixture(scope="session")
def engine(tiny_settings: Settings):
    from wanflash.pipelines.registry import create_pipeline

    pipe = create_pipeline(tiny_settings)
    pipe.load()
    return pipe


@pytest.fixture(scope="session")
def image():
    from PIL import Image

    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))


def make_spec(width: int = 1280, height: int = 720, duration: int = 2, seeds: list[int] | None = None,
              *, image: bool = True, fmt: str = "MP4", fps: int = 16) -> JobSpec:
    seeds = seeds or [1]
    return JobSpec(
        task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny",
        positive_prompt="a cat dances in the city at night", width=width, height=height,
        resolution_class=SIZE_CLASS[(width, height)], duration=duration, fps=fps,
        num_frames=duration * fps, image_key="img" if image else None, seeds=seeds,
        number_results=len(seeds), output_format=fmt, cost=0.0,
    )


@pytest.fixture
def spec_factory():
    return make_spec


@pytest.fixture
def short_clips(engine, monkeypatch: pytest.MonkeyPatch) -> int:
    """Clips of at most 17 frames, so that a 2 s request (32 frames) is chained from two clips: the
    chaining logic at a fifth of the 81-frame clips' cost. Returns the cap."""
    import dataclasses

    monkeypatch.setattr(engine, "profile", dataclasses.replace(engine.profile, max_clip_frames=17))
    return 17


@pytest.fixture
def tmp_out(tmp_path: Path) -> Path:
    return tmp_path

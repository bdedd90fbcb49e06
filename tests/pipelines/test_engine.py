"""The Wan engine on the tiny model: sizes, durations, formats, seeds, batching, progress, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wanflash.contract.validation import SIZES
from wanflash.errors import JobCancelled
from wanflash.formats import OUTPUT_FORMATS
from wanflash.media.encode import encode_video
from wanflash.media.probe import probe_file

ALL_SIZES = [wh for whs in SIZES.values() for wh in whs]


@pytest.mark.parametrize("size", ALL_SIZES, ids=[f"{w}x{h}" for w, h in ALL_SIZES])
def test_every_size_is_exact(engine, image, spec_factory, size: tuple[int, int]) -> None:
    w, h = size
    # Alternate image-to-video and text-to-video so both pipelines see every aspect family.
    with_image = ALL_SIZES.index(size) % 2 == 0
    spec = spec_factory(w, h, duration=2, image=with_image)
    result = engine.generate(spec, image=image if with_image else None)
    (video,) = result.videos
    assert video.shape == (32, h, w, 3)
    assert video.dtype == np.uint8
    gw, gh = result.info["generation_size"]
    assert gw % 16 == 0 and gh % 16 == 0 and gw * gh <= 64 * 48 * 1.5
    assert video.std() > 1.0  # real pixels, not a blank canvas


@pytest.mark.parametrize("duration", [2, 5, 15])
def test_durations_probe(engine, image, spec_factory, tmp_out: Path, duration: int) -> None:
    spec = spec_factory(1280, 720, duration=duration)
    result = engine.generate(spec, image=image)
    (video,) = result.videos
    assert video.shape[0] == duration * 16
    out = tmp_out / "v.mp4"
    encode_video(video, out, fps=spec.fps, fmt="MP4", quality=spec.output_quality)
    info = probe_file(out)
    assert (info.width, info.height, info.video_codec) == (1280, 720, "h264")
    assert info.fps == pytest.approx(16)
    assert abs(info.frames - duration * 16) <= 1
    assert info.duration == pytest.approx(duration, abs=1 / 16)
    # 15 s is longer than one 81-frame clip: it must have been chained.
    assert len(result.info["clips"]) == (3 if duration == 15 else 1)


@pytest.mark.parametrize("fmt, codec", [("MP4", "h264"), ("WEBM", "vp9"), ("MOV", "h264")])
def test_every_format(engine, image, spec_factory, tmp_out: Path, fmt: str, codec: str) -> None:
    spec = spec_factory(832, 1088, duration=2, fmt=fmt)
    (video,) = engine.generate(spec, image=image).videos
    out = tmp_out / f"v{OUTPUT_FORMATS[fmt].suffix}"
    encode_video(video, out, fps=16, fmt=fmt, quality=90)
    info = probe_file(out)
    assert (info.video_codec, info.pix_fmt, info.width, info.height) == (codec, "yuv420p", 832, 1088)
    assert abs(info.frames - 32) <= 1
    assert info.duration == pytest.approx(2.0, abs=1 / 16)


def test_four_results_distinct(engine, image, spec_factory) -> None:
    spec = spec_factory(960, 960, duration=2, seeds=[11, 12, 13, 14])
    result = engine.generate(spec, image=image)
    assert result.seeds == [11, 12, 13, 14]
    assert result.info["batched"] is True
    assert len(result.videos) == 4
    for v in result.videos:
        assert v.shape == (32, 960, 960, 3)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(result.videos[i], result.videos[j])


def test_same_seed_same_video_whatever_the_batch(engine, image, spec_factory) -> None:
    one = engine.generate(spec_factory(1280, 720, duration=2, seeds=[42]), image=image).videos[0]
    again = engine.generate(spec_factory(1280, 720, duration=2, seeds=[42]), image=image).videos[0]
    np.testing.assert_array_equal(one, again)
    # In a batch with other seeds, seed 42 still gives the same video (noise is drawn per seed).
    batch = engine.generate(spec_factory(1280, 720, duration=2, seeds=[41, 42]), image=image)
    assert batch.info["batched"] is True
    assert np.abs(batch.videos[1].astype(int) - one.astype(int)).max() <= 1
    assert not np.array_equal(batch.videos[0], one)


def test_chained_batch_matches_single(engine, image, spec_factory, short_clips) -> None:
    """Chained clips restart each result from its own last frame, also inside a batch."""
    single = engine.generate(spec_factory(1280, 720, duration=2, seeds=[5]), image=image)
    batch = engine.generate(spec_factory(1280, 720, duration=2, seeds=[5, 6]), image=image)
    assert len(single.info["clips"]) == 2
    assert np.abs(batch.videos[0].astype(int) - single.videos[0].astype(int)).max() <= 1


def test_progress_counts_every_step(engine, image, spec_factory, short_clips) -> None:
    calls: list[tuple[int, int, str]] = []
    result = engine.generate(spec_factory(1280, 720, duration=2), lambda *a: calls.append(a), image=image)
    clips = len(result.info["clips"])
    assert clips == 2
    total = engine.profile.steps * clips
    assert [c[0] for c in calls] == list(range(1, total + 1))
    assert {c[1] for c in calls} == {total}
    assert {c[2] for c in calls} == {"denoise"}


@pytest.fixture
def decode_counter(engine, monkeypatch):
    calls = {"n": 0}
    vae = engine.i2v.vae  # shared by both pipelines
    real = vae.decode

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", counting)
    return calls


def test_cancel_skips_decode(engine, image, spec_factory, decode_counter) -> None:
    seen: list[int] = []

    def cancel_at_first(step: int, total: int, stage: str) -> None:
        seen.append(step)
        raise JobCancelled("cancelled by test")

    with pytest.raises(JobCancelled):
        engine.generate(spec_factory(1280, 720, duration=6), cancel_at_first, image=image)
    assert seen == [1]
    assert decode_counter["n"] == 0
    # The same engine still works afterwards, and a normal run does decode.
    engine.generate(spec_factory(1280, 720, duration=2), image=image)
    assert decode_counter["n"] == 1


def test_cancel_in_a_later_clip(engine, image, spec_factory, decode_counter, short_clips) -> None:
    steps = engine.profile.steps

    def cancel_in_second_clip(step: int, total: int, stage: str) -> None:
        if step == steps + 1:
            raise JobCancelled("cancelled by test")

    with pytest.raises(JobCancelled):
        engine.generate(spec_factory(1280, 720, duration=2), cancel_in_second_clip, image=image)
    assert decode_counter["n"] == 1  # the first clip was decoded, the second never was


def test_text_to_video_differs_from_image_to_video(engine, image, spec_factory) -> None:
    i2v = engine.generate(spec_factory(1280, 720, duration=2, seeds=[3]), image=image).videos[0]
    t2v = engine.generate(spec_factory(1280, 720, duration=2, seeds=[3], image=False)).videos[0]
    assert i2v.shape == t2v.shape
    assert not np.array_equal(i2v, t2v)


def test_generate_before_load_raises(tiny_settings, spec_factory) -> None:
    from wanflash.pipelines.registry import create_pipeline

    with pytest.raises(RuntimeError, match="load"):
        create_pipeline(tiny_settings).generate(spec_factory())


def test_memory_stats_is_empty_on_cpu(engine) -> None:  # type: ignore[no-untyped-def]
    # The session engine runs on the CPU: no CUDA memory to report on /metrics (tests/gpu checks
    # the numbers on a GPU).
    assert engine.device.type == "cpu"
    assert engine.memory_stats() == {}

"""The native-audio stage on the tiny LTX-2: real diffusers code path, random weights, CPU.

The sound is noise, so these tests check the contract around it: one track per video, exactly as
long as the video, seeded, driven by the video (the conditioning reaches the audio), progress and
cancellation, and that it is skipped when the spec needs no generated sound.
"""

from __future__ import annotations

import numpy as np
import pytest

from wanflash.config import Settings
from wanflash.errors import JobCancelled
from wanflash.pipelines.audio import AudioVideoPipeline, conditioning_frames, fit_samples
from wanflash.pipelines.tiny_audio import SAMPLE_RATE


@pytest.fixture(scope="module")
def av_engine(tiny_settings: Settings) -> AudioVideoPipeline:
    from wanflash.pipelines.registry import create_pipeline

    # Same data dir as the bare engine, so the tiny Wan is built once per session.
    pipe = create_pipeline(tiny_settings.model_copy(update={"audio_model": "ltx2"}))
    assert isinstance(pipe, AudioVideoPipeline)
    pipe.load()
    return pipe


def _video(seed: int, frames: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 72, 128, 3), dtype=np.uint8)


def test_conditioning_frames_pad_past_the_end_to_8k_plus_1() -> None:
    video = _video(0, frames=32)
    for ratio, want in ((8, 33), (4, 33)):
        padded = conditioning_frames(video, ratio)
        assert padded.shape[0] == want and np.array_equal(padded[:32], video)
        assert all(np.array_equal(f, video[-1]) for f in padded[32:])
    # A length already of the form 8k+1 still gets a frame past the end (the audio must not come out short).
    assert conditioning_frames(_video(0, frames=33), 8).shape[0] == 41


def test_fit_samples_cuts_and_pads_with_silence() -> None:
    x = np.ones((2, 10), np.float32)
    assert fit_samples(x, 4).shape == (2, 4)
    padded = fit_samples(x, 15)
    assert padded.shape == (2, 15) and np.all(padded[:, 10:] == 0) and np.all(padded[:, :10] == 1)


def test_generates_a_track_as_long_as_each_video(av_engine, image, spec_factory) -> None:
    calls: list[tuple[int, int, str]] = []
    spec = spec_factory(1280, 720, duration=2, seeds=[4, 5])
    result = av_engine.generate(spec, lambda *a: calls.append(a), image=image)
    assert len(result.audio) == 2
    for track in result.audio:
        assert track is not None and track.rate == SAMPLE_RATE
        assert track.samples.shape == (2, 2 * SAMPLE_RATE) and track.samples.dtype == np.float32
        assert np.isfinite(track.samples).all() and np.abs(track.samples).max() > 0
    assert not np.array_equal(result.audio[0].samples, result.audio[1].samples)  # one seed each
    audio_calls = [c for c in calls if c[2] == "audio"]
    steps = av_engine.audio.steps
    assert [c[0] for c in audio_calls] == list(range(1, 2 * steps + 1)) and {c[1] for c in audio_calls} == {2 * steps}
    assert calls.index(audio_calls[0]) > max(i for i, c in enumerate(calls) if c[2] == "denoise")
    assert result.info["audio"]["conditioning"] == "video+prompt"


def test_audio_is_driven_by_the_video_and_seeded(av_engine, spec_factory) -> None:
    spec = spec_factory(1280, 720, duration=2)
    stage = av_engine.audio
    a1, a2, b = (stage.generate(spec, [v], [7])[0].samples for v in (_video(1), _video(1), _video(2)))
    assert np.array_equal(a1, a2)  # same video, prompt and seed: bit-identical sound
    # Only the frames changed: if the video tokens did not reach the audio branch, b would equal a1
    # bit for bit (a1 == a2 rules out run-to-run noise). Random weights make the effect small.
    assert not np.array_equal(a1, b)


def test_no_audio_stage_when_not_wanted(av_engine, image, spec_factory, monkeypatch) -> None:
    runs = {"n": 0}
    real = av_engine.audio.generate

    def counting(*args, **kwargs):
        runs["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(av_engine.audio, "generate", counting)
    silent = spec_factory(1280, 720, duration=2).model_copy(update={"audio": False})
    with_track = spec_factory(1280, 720, duration=2).model_copy(update={"audio_key": "inputs/x/audio.wav"})
    for spec in (silent, with_track):
        calls: list[tuple[int, int, str]] = []
        result = av_engine.generate(spec, lambda *a: calls.append(a), image=image)
        assert result.audio == [None] and "audio" not in result.info
        assert {c[2] for c in calls} == {"denoise"}
    assert runs["n"] == 0


def test_cancel_during_the_audio_stage(av_engine, image, spec_factory) -> None:
    def cancel_in_audio(step: int, total: int, stage: str) -> None:
        if stage == "audio":
            raise JobCancelled("cancelled by test")

    with pytest.raises(JobCancelled):
        av_engine.generate(spec_factory(1280, 720, duration=2), cancel_in_audio, image=image)

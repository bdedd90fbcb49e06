"""The native-audio stage on each backend's tiny twin: real diffusers code paths, random weights, CPU.

The sound is noise, so these tests check the contract around it, for every backend: one track per
video, exactly as long as the video, seeded, progress and cancellation, skipped when the spec needs
no generated sound; what each backend hears (LTX-2: the picture; ACE-Step: only the prompt); the
LTX-2 cuts (no video decode, one transformer pass per step, the prompt encoded once per job); and
the selection by ``WANFLASH_AUDIO_MODEL``.
"""

from __future__ import annotations

import numpy as np
import pytest

from wanflash.config import Settings, load_settings
from wanflash.errors import JobCancelled
from wanflash.pipelines.audio import BACKENDS, AudioVideoPipeline, fit_samples, generate_tracks
from wanflash.pipelines.audio_ltx2 import conditioning_frames
from wanflash.pipelines.tiny_audio import SAMPLE_RATE

BACKEND_NAMES = ["ace-step", "ltx2"]


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def av_engine(request: pytest.FixtureRequest, tiny_settings: Settings) -> AudioVideoPipeline:
    from wanflash.pipelines.registry import create_pipeline

    # Same data dir as the bare engine, so the tiny Wan is built once per session; no audio-to-video
    # stage around it (tiny has one by default), so the audio wrapper is the pipeline itself.
    pipe = create_pipeline(tiny_settings.replace(audio_model=request.param, a2v_model="none"))
    assert isinstance(pipe, AudioVideoPipeline)
    pipe.load()
    return pipe


@pytest.fixture(scope="module")
def ltx2_engine(tiny_settings: Settings) -> AudioVideoPipeline:
    from wanflash.pipelines.registry import create_pipeline

    pipe = create_pipeline(tiny_settings.replace(audio_model="ltx2"))
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
    result = av_engine.generate(spec, lambda *a, calls=calls: calls.append(a), image=image)
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
    backend = "ltx2" if "ltx2" in av_engine.audio.name else "ace-step"
    assert result.info["audio"]["conditioning"] == BACKENDS[backend].conditioning


def test_what_each_backend_hears(av_engine, spec_factory) -> None:
    spec = spec_factory(1280, 720, duration=2)
    backend = av_engine.audio

    def track(video: np.ndarray, prompt: str = spec.positive_prompt) -> np.ndarray:
        return generate_tracks(backend, spec.model_copy(update={"positive_prompt": prompt}), [video], [7])[0].samples

    a1, a2, b = track(_video(1)), track(_video(1)), track(_video(2))
    assert np.array_equal(a1, a2)  # same video, prompt and seed: bit-identical sound
    # Another prompt changes the sound for every backend (a1 == a2 rules out run-to-run noise).
    assert not np.array_equal(a1, track(_video(1), prompt="rain on a tin roof"))
    if backend.conditioning == "video+prompt":
        # Only the frames changed: if the video tokens did not reach the audio branch, b would equal a1.
        assert not np.array_equal(a1, b)
    else:
        # A prompt-only model does not see the picture: that is what the README says of it.
        assert np.array_equal(a1, b)


def test_no_audio_stage_when_not_wanted(ltx2_engine, image, spec_factory, monkeypatch) -> None:
    av_engine = ltx2_engine  # the decision is the stage's, the same for every backend
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
        result = av_engine.generate(spec, lambda *a, calls=calls: calls.append(a), image=image)
        assert result.audio == [None] and "audio" not in result.info
        assert {c[2] for c in calls} == {"denoise"}
    assert runs["n"] == 0


def test_cancel_during_the_audio_stage(av_engine, spec_factory) -> None:
    def cancel_in_audio(step: int, total: int, stage: str) -> None:
        if stage == "audio":
            raise JobCancelled("cancelled by test")

    with pytest.raises(JobCancelled):
        generate_tracks(av_engine.audio, spec_factory(1280, 720, duration=2), [_video(3)], [1], cancel_in_audio)


def test_ltx2_never_decodes_the_video_and_runs_one_pass_per_step(ltx2_engine, spec_factory, monkeypatch) -> None:
    pipe = ltx2_engine.audio.pipe
    counts = {"decode": 0, "transformer": 0, "text_encoder": 0}

    def no_decode(*args, **kwargs):
        counts["decode"] += 1
        raise AssertionError("the video VAE decoder ran")

    real_forward, real_encode = pipe.transformer.forward, pipe.text_encoder.forward

    def forward(*args, **kwargs):
        counts["transformer"] += 1
        return real_forward(*args, **kwargs)

    def encode(*args, **kwargs):
        counts["text_encoder"] += 1
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", no_decode)
    monkeypatch.setattr(pipe.transformer, "forward", forward)
    monkeypatch.setattr(pipe.text_encoder, "forward", encode)
    ltx2_engine.audio._embeds = None  # a new job
    spec = spec_factory(1280, 720, duration=2, seeds=[1, 2])
    tracks = generate_tracks(ltx2_engine.audio, spec, [_video(4), _video(5)], [1, 2])
    assert all(t.samples.shape == (2, 2 * SAMPLE_RATE) and np.abs(t.samples).max() > 0 for t in tracks)
    assert counts["decode"] == 0
    # The distilled schedule: 8 steps, one transformer pass each (no CFG pair, STG or modality pass).
    assert ltx2_engine.audio.steps == 8 and counts["transformer"] == 2 * 8
    assert counts["text_encoder"] == 1  # the text encoder runs once per job, not once per result


@pytest.mark.parametrize("value, backend", [(None, "ace-step"), ("ace-step", "ace-step"), ("ltx2", "ltx2"),
                                            ("none", None)])
def test_backend_selected_by_wanflash_audio_model(value, backend, tiny_settings, monkeypatch) -> None:
    from wanflash.pipelines.audio_acestep import AceStepAudioBackend
    from wanflash.pipelines.audio_ltx2 import LTX2AudioBackend
    from wanflash.pipelines.registry import create_pipeline
    from wanflash.pipelines.wan import WanVideoPipeline

    monkeypatch.delenv("WANFLASH_AUDIO_MODEL", raising=False)
    if value is not None:
        monkeypatch.setenv("WANFLASH_AUDIO_MODEL", value)
    settings = load_settings(data_dir=tiny_settings.data_dir, profile="tiny", device="cpu", a2v_model="none")
    pipe = create_pipeline(settings)  # not loaded: selection only
    if backend is None:
        assert isinstance(pipe, WanVideoPipeline)
    else:
        want = {"ace-step": AceStepAudioBackend, "ltx2": LTX2AudioBackend}[backend]
        assert isinstance(pipe, AudioVideoPipeline) and type(pipe.audio) is want

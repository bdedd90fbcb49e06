"""Soundtracks through the render path with the tiny Wan + each tiny audio backend: what ends up in the file.

Generated audio (every backend: ACE-Step, the default, and LTX-2): AAC in MP4/MOV, Opus in WEBM,
48 kHz stereo, as long as the video to within one audio frame. ``audio: false``: no audio stream. An input track: carried through sample for sample
(checked against the input at zero shift), a shorter one padded with silence, a longer one cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.contract.specs import validate_video_task
from tests.media.audio_support import AUDIO_FRAME, chirp, snr_db, wav_bytes
from wanflash.config import Settings
from wanflash.contract.validation import ResolvedInputs
from wanflash.media.probe import probe_file
from wanflash.pipelines.profiles import PROFILES
from wanflash.worker.protocol import RunJob
from wanflash.worker.render import Renderer, decode_audio

pytest.importorskip("torch")
pytest.importorskip("diffusers")

# Lowest quality: the frames are noise, which costs the encoder most at high quality.
TASK = {"taskType": "videoInference", "taskUUID": "", "model": "alibaba:wan@2.6-flash",
        "positivePrompt": "a dog runs on the street", "width": 1280, "height": 720, "duration": 2, "seed": 11, "outputQuality": 20,
        "providerSettings": {"alibaba": {"promptExtend": False}}}
CODECS = {"MP4": "aac", "MOV": "aac", "WEBM": "opus"}


ENGINES: dict[str, Any] = {}


def _engine(data_dir: Path, audio_model: str | None = None) -> Any:
    from wanflash.pipelines.registry import create_pipeline

    key = audio_model or "default"
    if key not in ENGINES:
        extra = {"audio_model": audio_model} if audio_model else {}
        ENGINES[key] = create_pipeline(Settings(data_dir=data_dir, profile="tiny", device="cpu", **extra))
        ENGINES[key].load()
    return ENGINES[key]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yield tmp_path_factory.mktemp("data")
    ENGINES.clear()


@pytest.fixture(scope="module")
def av_engine(data_dir: Path):
    return _engine(data_dir)  # the default backend, as a server with no audio setting runs it


def _render(engine: Any, out: Path, *, track: Path | None = None, seconds: float | None = None,
            **task: Any) -> tuple[Any, list[str]]:
    import uuid

    raw = {**TASK, "taskUUID": str(uuid.uuid4()), **task}
    inputs = ResolvedInputs()
    if track is not None:
        raw["inputs"] = {"audio": "0b8e5e0e-1111-4222-8333-444455556666"}
        inputs = ResolvedInputs(audio_key="inputs/x/audio.wav", audio_seconds=seconds)
    spec = validate_video_task(raw, profile=PROFILES["tiny"], resolve=lambda _: inputs)
    out.mkdir(parents=True, exist_ok=True)
    job = RunJob(task_uuid=spec.task_uuid, attempt=1, spec_json=spec.model_dump_json(), out_dir=str(out),
                 audio_path=str(track) if track else None)
    stages: list[str] = []
    done = Renderer(engine).render(job, lambda step, total, stage: stages.append(stage))
    return done, stages


@pytest.mark.parametrize("fmt, backend", [("MP4", None), ("MOV", None), ("WEBM", None), ("MP4", "ltx2")])
def test_generated_audio_codec_rate_and_length(data_dir: Path, tmp_path: Path, fmt: str, backend: str | None) -> None:
    done, stages = _render(_engine(data_dir, backend), tmp_path, outputFormat=fmt)
    info = probe_file(done.outputs[0].path)
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == (CODECS[fmt], 48000, 2)
    assert info.duration == pytest.approx(2.0)
    assert 0 <= info.audio_duration - info.duration <= AUDIO_FRAME / 48000
    assert stages.index("audio") > stages.index("denoise") and stages.index("encode") > stages.index("audio")
    assert done.pipeline_info["audio"]["model"] == {None: "tiny-ace-step", "ltx2": "tiny-ltx2"}[backend]


def test_audio_false_has_no_audio_stream(av_engine, tmp_path: Path) -> None:
    done, stages = _render(av_engine, tmp_path, providerSettings={"alibaba": {"audio": False, "promptExtend": False}})
    assert not probe_file(done.outputs[0].path).has_audio
    assert "audio" not in stages and "audio" not in done.pipeline_info


@pytest.mark.parametrize("fmt, rate", [("MP4", 44100), ("WEBM", 48000)])
def test_short_input_track_is_carried_through_and_padded(av_engine, tmp_path: Path, fmt: str, rate: int) -> None:
    source = chirp(1.2, rate)
    track = tmp_path / "in.wav"
    track.write_bytes(wav_bytes(source, rate))
    done, stages = _render(av_engine, tmp_path / "out", track=track, seconds=1.2, outputFormat=fmt)
    assert "audio" not in stages  # the supplied track is the soundtrack: no model runs for it
    path = done.outputs[0].path
    info = probe_file(path)
    assert (info.audio_codec, info.audio_rate) == (CODECS[fmt], rate)
    assert 0 <= info.audio_duration - 2.0 <= AUDIO_FRAME / rate
    out = decode_audio(path)
    assert snr_db(source, out.samples) > 20  # the input's samples, in place, through a lossy codec
    tail = out.samples[:, source.shape[1] + AUDIO_FRAME:]
    assert tail.shape[1] > 0.7 * rate and np.sqrt((tail ** 2).mean()) < 1e-3  # padded with silence


def test_long_input_track_is_cut_to_the_video(av_engine, tmp_path: Path) -> None:
    source = chirp(3.5, 48000)
    track = tmp_path / "in.wav"
    track.write_bytes(wav_bytes(source, 48000))
    done, _ = _render(av_engine, tmp_path / "out", track=track, seconds=3.5, outputFormat="MOV")
    info = probe_file(done.outputs[0].path)
    assert 0 <= info.audio_duration - 2.0 <= AUDIO_FRAME / 48000
    assert snr_db(source[:, :96000], decode_audio(done.outputs[0].path).samples) > 20

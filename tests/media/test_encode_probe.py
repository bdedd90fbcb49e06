"""Encoding to MP4/WEBM/MOV and probing the result (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wanflash.formats import OUTPUT_FORMATS
from wanflash.media.encode import FORMATS, crf_for, encode_video
from wanflash.media.probe import ProbeError, probe_file
from wanflash.media.track import AudioTrack

CODECS = {"MP4": "h264", "MOV": "h264", "WEBM": "vp9"}
AUDIO_CODECS = {"MP4": "aac", "MOV": "aac", "WEBM": "opus"}


def _frames(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), np.uint8))
    return np.stack([np.roll(big, 4 * i, axis=1) for i in range(n)])


def _sine(seconds: float, rate: int, channels: int) -> AudioTrack:
    t = np.arange(int(round(seconds * rate))) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    return AudioTrack(samples=np.stack([tone] * channels), rate=rate)


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_probe(tmp_path: Path, fmt: str) -> None:
    frames = _frames(32, 320, 176)
    out = tmp_path / f"clip{OUTPUT_FORMATS[fmt].suffix}"
    encode_video(frames, out, fps=16, fmt=fmt, quality=80)
    info = probe_file(out)
    assert info.video_codec == CODECS[fmt]
    assert info.pix_fmt == "yuv420p"
    assert (info.width, info.height) == (320, 176)
    assert info.fps == pytest.approx(16.0)
    assert abs(info.frames - 32) <= 1
    assert info.duration == pytest.approx(2.0, abs=1 / 16)
    assert info.audio_codec is None
    assert ("webm" in info.container) == (fmt == "WEBM")
    # Only the final file remains: no temporary part left behind.
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_mp4_is_faststart(tmp_path: Path) -> None:
    out = tmp_path / "a.mp4"
    encode_video(_frames(8, 64, 64), out, fps=24, fmt="MP4", quality=95)
    data = out.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("fps", [16, 24])
def test_exact_fps_and_duration(tmp_path: Path, fps: int) -> None:
    out = tmp_path / "a.mp4"
    encode_video(_frames(5 * fps, 128, 96), out, fps=fps, fmt="MP4", quality=60)
    info = probe_file(out)
    assert info.fps == pytest.approx(fps)
    assert info.frames == 5 * fps
    assert info.duration == pytest.approx(5.0, abs=1 / fps)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quality_maps_to_monotonic_crf(fmt: str) -> None:
    crfs = [crf_for(fmt, q) for q in range(20, 100)]
    assert all(a >= b for a, b in zip(crfs, crfs[1:]))
    assert crfs[0] > crfs[-1]
    limit = 51 if CODECS[fmt] == "h264" else 63
    assert all(0 <= c <= limit for c in crfs)


def test_quality_changes_file_size(tmp_path: Path) -> None:
    frames = _frames(16, 256, 144)
    low, high = tmp_path / "low.mp4", tmp_path / "high.mp4"
    encode_video(frames, low, fps=16, fmt="MP4", quality=20)
    encode_video(frames, high, fps=16, fmt="MP4", quality=99)
    assert high.stat().st_size > low.stat().st_size


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_track_muxed(tmp_path: Path, fmt: str, channels: int) -> None:
    out = tmp_path / f"a{OUTPUT_FORMATS[fmt].suffix}"
    encode_video(_frames(32, 128, 96), out, fps=16, fmt=fmt, quality=70, audio=_sine(2.0, 44100, channels))
    info = probe_file(out)
    assert info.audio_codec == AUDIO_CODECS[fmt]
    assert info.audio_channels == channels
    assert info.audio_rate == (48000 if fmt == "WEBM" else 44100)
    assert info.audio_duration == pytest.approx(2.0, abs=0.05)
    assert info.frames == 32


def test_audio_fitted_to_video_length(tmp_path: Path) -> None:
    short, long_ = tmp_path / "short.mp4", tmp_path / "long.webm"
    encode_video(_frames(32, 64, 64), short, fps=16, fmt="MP4", quality=70, audio=_sine(0.5, 24000, 1))
    encode_video(_frames(32, 64, 64), long_, fps=16, fmt="WEBM", quality=70, audio=_sine(7.0, 16000, 2))
    assert probe_file(short).audio_duration == pytest.approx(2.0, abs=0.05)
    assert probe_file(long_).audio_duration == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("fmt", ["MP4", "MOV"])
@pytest.mark.parametrize("rate", [16000, 24000])
def test_model_rates_resampled_to_48k(tmp_path: Path, fmt: str, rate: int) -> None:
    """Model audio (16 kHz tiny LTX-2, 24 kHz LTX-2) leaves as 48 kHz AAC, the tone where it was."""
    from wanflash.worker.render import decode_audio

    out = tmp_path / f"m{OUTPUT_FORMATS[fmt].suffix}"
    encode_video(_frames(32, 64, 64), out, fps=16, fmt=fmt, quality=70, audio=_sine(2.0, rate, 2))
    info = probe_file(out)
    assert (info.audio_codec, info.audio_rate) == ("aac", 48000)
    assert 0 <= info.audio_duration - 2.0 <= 1024 / 48000  # within one AAC frame
    decoded = decode_audio(str(out))
    spectrum = np.abs(np.fft.rfft(decoded.samples[0, :48000]))
    assert np.argmax(spectrum) == 440  # 1 s at 48 kHz: bin k is k Hz


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fmt": "AVI"}, "fmt"),
        ({"quality": 19}, "quality"),
        ({"quality": 100}, "quality"),
        ({"fps": 0}, "fps"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"fps": 16, "fmt": "MP4", "quality": 95} | kwargs
    with pytest.raises(ValueError, match=match):
        encode_video(_frames(2, 64, 64), tmp_path / "x.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        encode_video(np.zeros((2, 63, 64, 3), np.uint8), tmp_path / "x.mp4", fps=16, fmt="MP4", quality=95)
    with pytest.raises(ValueError, match="uint8"):
        encode_video(np.zeros((2, 64, 64, 3), np.float32), tmp_path / "x.mp4", fps=16, fmt="MP4", quality=95)


def test_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    out.write_bytes(b"old")
    bad_audio = AudioTrack(samples=np.zeros((3, 100), np.float32), rate=16000)  # 3 channels: rejected
    with pytest.raises(ValueError, match="channels"):
        encode_video(_frames(4, 64, 64), out, fps=16, fmt="MP4", quality=95, audio=bad_audio)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_probe_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ProbeError):
        probe_file(bad)


def test_decoded_pixels_close_to_source(tmp_path: Path) -> None:
    frames = _frames(8, 128, 96)
    out = tmp_path / "a.mp4"
    encode_video(frames, out, fps=16, fmt="MP4", quality=99)
    import av

    with av.open(str(out)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    # Colour conversion and lossy coding move values a little; a wrong matrix or range moves them a lot.
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 8

"""Encode uint8 RGB frames (and an optional audio track) to MP4, WEBM or MOV with PyAV.

Guarantees:

* MP4 and MOV hold H.264 (libx264), WEBM holds VP9 (libvpx-vp9); pixels are yuv420p, BT.709
  tagged, so every browser and player can show them. MP4 is written with ``+faststart`` (the
  index sits before the media, so playback starts before the download ends).
* The frame rate is exact: frame ``i`` has pts ``i`` in a ``1/fps`` time base, so ``F`` frames
  last exactly ``F / fps`` seconds.
* The audio track, when given, is fitted to the video's duration (cut, or padded with silence)
  and encoded as AAC (MP4, MOV) or Opus (WEBM) at 44.1 or 48 kHz: AAC keeps a 44.1 or 48 kHz
  track's rate, everything else (Opus always, it favours 48 kHz; model output at 16 or 24 kHz) is
  resampled to 48 kHz by the codec context's resampler.
* The file appears whole or not at all: it is written next to ``path`` under a temporary name
  and renamed over ``path`` only after the muxer closed it cleanly.

``quality`` (Runware ``outputQuality``, 20-99) maps linearly to a constant rate factor,
higher quality giving a lower CRF (more bits):

=========  ============  ==============
quality    H.264 CRF     VP9 CRF
=========  ============  ==============
20         38            52
60         ~26           ~33
95         ~15           ~17
99         14            15
=========  ============  ==============

i.e. ``crf = round(hi - (quality - 20) * (hi - lo) / 79)`` with ``(hi, lo) = (38, 14)`` for
H.264 (scale 0-51) and ``(52, 15)`` for VP9 (scale 0-63).

Speed (``X264_OPTIONS``, ``VP9_OPTIONS``; measured by ``bench/encode.py --sweep``, figures in
``bench/RESULTS.md``): x264 ``veryfast`` and VP9 ``realtime`` with ``cpu-used 8`` and row
multithreading; threads are left to the encoders, which use every core. Encoding runs after
generation, so it must stay small next to it: at quality 95 ``veryfast`` costs less CPU than
``superfast`` (which writes ~3x the bytes at the same CRF), ``ultrafast`` halves the CPU but
doubles the size, and slower presets cost 1.8-3x the CPU for at most ~20 % smaller files.
The trade-off against ``outputQuality``: a higher quality (lower CRF) makes the file much larger
(~30x from 20 to 99) and the encode somewhat slower (~1.6x), never enough to rival generation.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import av
import numpy as np

from wanflash.formats import OUTPUT_FORMATS, QUALITY_MAX, QUALITY_MIN

if TYPE_CHECKING:
    from wanflash.media.track import AudioTrack

# Containers, codecs, suffixes and CRF ranges come from the one output-format table.
FORMATS = tuple(OUTPUT_FORMATS)
AAC_RATES = (44100, 48000)  # kept as they are; any other rate is resampled to 48 kHz
# Encoder speed settings (see the module docstring for why; bench/encode.py --sweep measures them).
# Threads are left to the encoders (automatic; both use every core).
X264_OPTIONS = {"preset": "veryfast", "profile": "high"}
# CRF mode in libvpx needs the target bitrate set to 0.
VP9_OPTIONS = {"b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "2",
               "lag-in-frames": "0"}


def crf_for(fmt: str, quality: int) -> int:
    """The CRF used for ``quality`` (20-99) in ``fmt``; see the module docstring."""
    fmt = _check_format(fmt)
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise ValueError(f"quality must be in {QUALITY_MIN}..{QUALITY_MAX}, got {quality}")
    spec = OUTPUT_FORMATS[fmt]
    hi, lo = spec.crf_at_min_quality, spec.crf_at_max_quality
    return int(round(hi - (quality - QUALITY_MIN) * (hi - lo) / (QUALITY_MAX - QUALITY_MIN)))


def _check_format(fmt: str) -> str:
    up = fmt.upper()
    if up not in OUTPUT_FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    return up


def encode_video(
    frames: np.ndarray,
    path: Path,
    *,
    fps: int,
    fmt: str,
    quality: int,
    audio: AudioTrack | None = None,
) -> None:
    """Write ``frames`` (F, H, W, 3) uint8 RGB to ``path`` as ``fmt``; see the module docstring."""
    fmt = _check_format(fmt)
    crf = crf_for(fmt, quality)
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be an (F, H, W, 3) array, got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n, height, width, _ = frames.shape
    if n < 1:
        raise ValueError("frames must hold at least one frame")
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    if not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")

    path = Path(path)
    spec = OUTPUT_FORMATS[fmt]
    container_name, vcodec, acodec = spec.container, spec.video_codec, spec.audio_codec
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        options = {"movflags": "+faststart"} if fmt == "MP4" else {}
        with av.open(str(tmp), mode="w", format=container_name, options=options) as out:
            vstream = _add_video_stream(out, vcodec, width, height, fps, crf)
            astream = _add_audio_stream(out, acodec, audio) if audio is not None else None
            rate = Fraction(fps)
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                # Convert here, with the BT.709 matrix that the stream is tagged with.
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
                frame.pts = i
                frame.time_base = 1 / rate
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
            if astream is not None and audio is not None:
                _write_audio(out, astream, audio, seconds=n / fps)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add_video_stream(out: av.container.OutputContainer, codec: str, width: int, height: int,
                      fps: int, crf: int) -> av.VideoStream:
    rate = Fraction(fps)
    stream = cast(av.VideoStream, out.add_stream(codec, rate=rate))  # add_stream is typed as any stream
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.time_base = 1 / rate
    stream.codec_context.time_base = 1 / rate
    cc = stream.codec_context
    cc.color_primaries = 1  # BT.709
    cc.color_trc = 1
    cc.colorspace = 1
    cc.color_range = 1  # limited ("tv") range, what players assume
    stream.options = {"crf": str(crf), **(X264_OPTIONS if codec == "libx264" else VP9_OPTIONS)}
    stream.thread_type = "AUTO"
    return stream


def _add_audio_stream(out: av.container.OutputContainer, codec: str, audio: AudioTrack) -> av.AudioStream:
    samples = np.asarray(audio.samples)
    if samples.ndim != 2 or samples.shape[0] not in (1, 2):
        raise ValueError(f"audio samples must be (channels, samples) with 1 or 2 channels, got {samples.shape}")
    if audio.rate <= 0:
        raise ValueError(f"audio rate must be positive, got {audio.rate}")
    rate = int(audio.rate) if codec == "aac" and audio.rate in AAC_RATES else 48000
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    stream = cast(av.AudioStream, out.add_stream(codec, rate=rate, layout=layout))
    stream.bit_rate = 128_000 if layout == "stereo" else 96_000
    return stream


def _write_audio(out: av.container.OutputContainer, stream: av.AudioStream, audio: AudioTrack,
                 *, seconds: float) -> None:
    samples = np.asarray(audio.samples, dtype=np.float32)
    channels = samples.shape[0]
    want = int(round(seconds * audio.rate))
    if samples.shape[1] >= want:
        samples = samples[:, :want]
    else:
        samples = np.concatenate([samples, np.zeros((channels, want - samples.shape[1]), np.float32)], axis=1)
    samples = np.clip(samples, -1.0, 1.0)
    layout = "mono" if channels == 1 else "stereo"
    # Feed in chunks; the codec context resamples to its rate/format and reframes to its frame size.
    chunk = 4096
    for start in range(0, want, chunk):
        part = np.ascontiguousarray(samples[:, start:start + chunk])
        frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
        frame.sample_rate = audio.rate
        frame.pts = start
        frame.time_base = Fraction(1, audio.rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))

"""Probe a media file with PyAV: what every output is checked against before it is stored.

:func:`probe_file` opens the container, reads the first video and audio streams' parameters
and, by default, decodes every video frame, so a file that probes is a file that plays. The
frame count is the number of decoded frames; ``duration`` is ``frames / fps`` (the time the
video track lasts), and ``audio_duration`` is measured from the decoded audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av


class ProbeError(ValueError):
    """The file is not a readable video."""


@dataclass(frozen=True)
class MediaInfo:
    container: str  # PyAV/ffmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    video_codec: str  # e.g. "h264", "vp9"
    width: int
    height: int
    fps: float
    frames: int
    duration: float  # seconds of video: frames / fps
    pix_fmt: str | None
    audio_codec: str | None = None  # e.g. "aac", "opus"
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_duration: float | None = None
    size_bytes: int = 0

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def probe_file(path: str | Path, *, decode: bool = True) -> MediaInfo:
    """Describe ``path``. With ``decode`` (the default) every video frame and audio packet is
    decoded; otherwise frames are counted from packets. Raises :class:`ProbeError`."""
    path = Path(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise ProbeError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ProbeError(f"{path} has no video stream")
        vs = container.streams.video[0]
        as_ = container.streams.audio[0] if container.streams.audio else None
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not rate:
            raise ProbeError(f"{path}: video stream has no frame rate")
        fps = float(rate)
        frames = 0
        audio_samples = 0
        streams = [vs] + ([as_] if as_ is not None else [])
        try:
            for packet in container.demux(*streams):
                if packet.stream is vs:
                    if decode:
                        frames += len(packet.decode())
                    elif packet.size:
                        frames += 1
                elif decode:
                    for af in packet.decode():
                        audio_samples += af.samples  # type: ignore[union-attr]  # the audio stream's packets
                elif as_ is not None and packet.size and packet.duration is not None:
                    audio_samples += int(packet.duration * packet.time_base * as_.rate)
        except av.error.FFmpegError as exc:
            raise ProbeError(f"{path}: decode failed: {exc}") from exc
        audio_duration = None
        if as_ is not None and as_.rate:
            audio_duration = audio_samples / float(as_.rate)
        return MediaInfo(
            container=container.format.name,
            video_codec=vs.codec_context.name,
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=fps,
            frames=frames,
            duration=frames / fps,
            pix_fmt=vs.codec_context.pix_fmt,
            audio_codec=as_.codec_context.name if as_ is not None else None,
            audio_rate=as_.rate if as_ is not None else None,
            audio_channels=as_.codec_context.channels if as_ is not None else None,
            audio_duration=audio_duration,
            size_bytes=path.stat().st_size,
        )

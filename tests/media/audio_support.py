"""Test signals and checks for soundtracks: a chirp that no shifted copy matches, WAV bytes, SNR."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

# AAC codes 1024 samples per frame (Opus 960 at 48 kHz): the most a muxed track may overshoot.
AUDIO_FRAME = 1024


def chirp(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    """float32 (channels, n): a rising, amplitude-modulated tone; channel 2 is channel 1 inverted."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.4 * np.sin(2 * np.pi * (200 * t + 400 * t * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))
    return np.stack([x, -x][:channels]).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of float samples (channels, n)."""
    buf = io.BytesIO()
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(buf, mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Signal-to-error ratio of ``decoded`` against ``reference`` over the reference's length, no shift."""
    n = reference.shape[1]
    assert decoded.shape[1] >= n, f"decoded audio is shorter ({decoded.shape[1]}) than the reference ({n})"
    err = reference - decoded[:, :n]
    return float(10 * np.log10((reference ** 2).sum() / max((err ** 2).sum(), 1e-20)))

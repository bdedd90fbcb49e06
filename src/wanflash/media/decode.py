"""Decoding media files this service wrote or already checked (an uploaded input saved by the API, a rendered
output): the whole audio track as float32 samples.

Untrusted bytes never come here; they go through :mod:`wanflash.media.checks` first.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np


def decode_audio_file(path: str) -> tuple[np.ndarray, int]:
    """The first audio stream of ``path`` as float32 samples shaped (channels, samples) at its native rate;
    more than one channel comes back as stereo."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo" if stream.channels > 1 else "mono",
                                      rate=stream.rate)
        chunks: list[Any] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        samples = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((1, 0), np.float32)
        return samples, int(stream.rate)

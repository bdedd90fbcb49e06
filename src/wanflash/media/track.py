"""An audio track in memory: what the decoders produce, the audio models return and the encoder muxes.

Plain data (numpy), so the media layer needs nothing from the pipelines to encode a soundtrack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AudioTrack:
    """Float32 samples shaped (channels, samples) at ``rate`` Hz."""

    samples: np.ndarray
    rate: int

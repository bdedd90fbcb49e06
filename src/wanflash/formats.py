"""The output-format table: the one place that says what each ``outputFormat`` is.

Each row names the wire value, the container PyAV muxes, the video and audio codecs, the file suffix, the MIME
type, and the CRF that ``outputQuality`` 20 and 99 map to (see :mod:`wanflash.media.encode`). The wire literal
(:data:`OutputFormat`), the encoder, storage content types, the CLI's ``--format``, OpenAPI and the playground all
read this table, so adding a format is one row here (plus its codec check in ``wanflash doctor`` comes for free).
Pure data: no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# The wire literal stays written out so type checkers see it; the check below keeps it equal to the table.
OutputFormat = Literal["MP4", "WEBM", "MOV"]

QUALITY_MIN, QUALITY_MAX = 20, 99  # Runware's outputQuality range
DEFAULT_FORMAT: OutputFormat = "MP4"


@dataclass(frozen=True)
class FormatSpec:
    """One output format: container, codecs, suffix, MIME type and the CRF range ``outputQuality`` spans."""

    name: str  # the wire value (outputFormat)
    container: str  # the FFmpeg muxer PyAV opens
    video_codec: str
    audio_codec: str
    suffix: str
    mime_type: str
    crf_at_min_quality: int  # CRF at outputQuality 20 (fewest bits)
    crf_at_max_quality: int  # CRF at outputQuality 99 (most bits)


OUTPUT_FORMATS: dict[str, FormatSpec] = {f.name: f for f in (
    FormatSpec("MP4", "mp4", "libx264", "aac", ".mp4", "video/mp4", 38, 14),
    FormatSpec("WEBM", "webm", "libvpx-vp9", "libopus", ".webm", "video/webm", 52, 15),
    FormatSpec("MOV", "mov", "libx264", "aac", ".mov", "video/quicktime", 38, 14),
)}

if tuple(OUTPUT_FORMATS) != get_args(OutputFormat):  # an edit to one without the other must not import
    raise RuntimeError(f"OutputFormat {get_args(OutputFormat)} differs from OUTPUT_FORMATS {tuple(OUTPUT_FORMATS)}")

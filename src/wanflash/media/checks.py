"""Decoding untrusted image, audio and base64 input (reliability.md §3).

Every function here turns *any* failure into :class:`InvalidRequest` with one Runware error naming
``parameter``; no other exception type escapes (a bad input must never become a 500).

Images (:func:`decode_image`): Pillow restricted to JPEG/PNG/WEBP/GIF/BMP (no SVG, FITS, PSD, ...,
whatever the declared MIME says); width*height checked against ``max_pixels`` from the header before any
pixel is decoded, and ``DecompressionBombWarning`` raised as an error; ``verify()`` on one open then
``load()`` on a second (``load`` alone tolerates a PNG missing its tail); EXIF orientation applied;
first frame of animations; result always mode ``RGB``: alpha (RGBA/LA/PA, P/L/RGB with a transparency
key) is composited onto **white**, 16-bit greyscale is scaled (not clipped) to 8 bits, CMYK converted.

Audio (:func:`probe_audio`, :func:`decode_audio`): the demuxer is chosen from magic bytes, never from a
name, URL or Content-Type, and forced (``format=``) with ``format_whitelist`` set to it, so HLS/concat/
image2 and friends can never be selected; ``io_open`` refuses every nested open (an m3u8 or ffconcat
cannot read local or remote files); exactly one stream, of type audio, codec allow-listed; declared
duration and *decoded* duration both capped (headers lie), and something must decode.
Residual risk: FFmpeg and Pillow decoders run in this process; the caller may run these functions
in a worker thread or a short-lived subprocess with rlimits for defence in depth.

Base64 (:func:`decode_base64_input`): data URIs must be ``;base64``; the length cap is checked before
decoding; decoding is strict (``validate=True``); URL-safe alphabet and missing padding accepted.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidRequest, RunwareError

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
BACKGROUND = (255, 255, 255)  # alpha is composited onto white
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole (constant) final chunk

AUDIO_CODECS = frozenset(
    {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8", "mp3", "mp3float", "vorbis", "opus",
     "flac", "aac"}
)
# sniffed kind -> (forced demuxer, format_whitelist)
_DEMUXERS = {
    "wav": ("wav", "wav"),
    "mp3": ("mp3", "mp3"),
    "aac": ("aac", "aac"),
    "ogg": ("ogg", "ogg"),
    "flac": ("flac", "flac"),
    "m4a": ("mov", "mov,mp4,m4a,3gp,3g2,mj2"),
    "webm": ("matroska", "matroska,webm"),
}
MAX_AUDIO_CHANNELS = 8

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_WS = re.compile(r"\s+")


def _bad(code: str, message: str, parameter: str) -> InvalidRequest:
    # Messages reach API clients: written as plain sentences (capital, full stop), never a decoder's text.
    message = message[:1].upper() + message[1:]
    if not message.endswith("."):
        message += "."
    return InvalidRequest(errors=[RunwareError(code=code, message=message, parameter=parameter)])


# ----------------------------------------------------------------------------------- base64


def base64_length_limit(max_bytes: int) -> int:
    """Longest base64 text (no whitespace) that can decode to at most ``max_bytes``."""
    return -(-max_bytes // 3) * 4


def decode_base64_input(value: str, *, parameter: str, max_bytes: int) -> bytes | None:
    """Decode a ``data:...;base64,`` URI or raw base64; ``None`` when it is clearly something else.

    ``None`` for a UUID, anything with ``://`` (a URL), or a short string, so callers can try other
    interpretations. Otherwise bytes, or ``InvalidRequest`` with code ``invalidBase64`` (bad data URI,
    bad alphabet, data after padding, empty) or ``inputTooLarge`` (checked before decoding).
    """
    if not isinstance(value, str):
        raise _bad("invalidBase64", "expected a string", parameter)
    limit = base64_length_limit(max_bytes)
    # Cheap first gate on the raw length (allowing for line breaks) before any copy is made.
    if len(value) > limit + limit // 32 + 1024:
        raise _bad("inputTooLarge", f"input larger than {max_bytes} bytes", parameter)
    s = value.strip()
    if s[:5].lower() == "data:":
        header, sep, payload = s[5:].partition(",")
        if not sep:
            raise _bad("invalidBase64", "malformed data URI (no comma)", parameter)
        params = [p.strip().lower() for p in header.split(";")]
        if "base64" not in params[1:]:
            raise _bad("invalidBase64", "data URIs must be base64-encoded (;base64)", parameter)
        s = payload
    elif "://" in s or _UUID.match(s) or len(s) < 16:
        return None
    s = _WS.sub("", s)
    if len(s) > limit + 3:
        raise _bad("inputTooLarge", f"input larger than {max_bytes} bytes", parameter)
    if "-" in s or "_" in s:
        if "+" in s or "/" in s:
            raise _bad("invalidBase64", "mixed standard and URL-safe base64 alphabets", parameter)
        s = s.replace("-", "+").replace("_", "/")
    if len(s) % 4 == 1:
        raise _bad("invalidBase64", "invalid base64 length", parameter)
    s += "=" * (-len(s) % 4)
    try:
        out = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("invalidBase64", "invalid base64: characters outside the alphabet or misplaced padding",
                   parameter) from None
    if not out:
        raise _bad("invalidBase64", "empty data", parameter)
    if len(out) > max_bytes:
        raise _bad("inputTooLarge", f"input larger than {max_bytes} bytes", parameter)
    return out


# ----------------------------------------------------------------------------------- images


def decode_image(data: bytes, *, parameter: str, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Decode untrusted image bytes to a loaded RGB ``Image``; see the module docstring.

    With ``max_side`` the result is scaled down (aspect kept) so its longer side is at most that,
    and memory stays near the output's size where Pillow allows: JPEGs decode at a reduced DCT
    scale (``draft``), and single-band/RGB(A) images are reduced before the RGB conversion (a
    40 MP greyscale PNG never becomes a 120 MB RGB buffer).

    Codes: ``invalidImage`` (unsupported format, corrupt, truncated), ``imageTooLarge`` (pixel cap).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
                _check_size(probe.size, max_pixels, parameter)
                probe.verify()  # checksums/structure; catches truncation load() would tolerate
                if probe.format == "PNG" and _PNG_IEND not in data:
                    # verify() stops at the IEND tag and tolerates a cut inside its CRC.
                    raise _bad("invalidImage", "corrupt or truncated image (PNG has no complete IEND)", parameter)
            im: Image.Image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            _check_size(im.size, max_pixels, parameter)  # a second parse must agree
            im.seek(0)
            if max_side is not None and im.format == "JPEG" and max(im.size) > max_side:
                scale = max_side / max(im.size)
                im.draft(im.mode, (math.ceil(im.width * scale), math.ceil(im.height * scale)))
            im.load()
            im = ImageOps.exif_transpose(im)
            _check_size(im.size, max_pixels, parameter)
            if max_side is None or max(im.size) <= max_side:
                return _to_rgb(im)
            if im.mode in _RESIZE_FIRST and "transparency" not in im.info:
                return _to_rgb(_shrink(im, max_side))
            return _shrink(_to_rgb(im), max_side)
    except InvalidRequest:
        raise
    except UnidentifiedImageError:
        raise _bad("invalidImage", f"unsupported image format (allowed: {', '.join(IMAGE_FORMATS)})",
                   parameter) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bad("imageTooLarge", f"image exceeds {max_pixels} pixels", parameter) from None
    except MemoryError:
        raise _bad("imageTooLarge", "image too large to decode", parameter) from None
    except Exception:  # noqa: BLE001 - decoder errors come in many types; none may escape as a 500
        # The decoder's own text (exception types, errno values) means nothing to a client.
        raise _bad("invalidImage", "The image could not be decoded: it is corrupt or truncated.", parameter) from None


# Modes Pillow resamples directly and _to_rgb converts without a palette or alpha key: shrink these
# first, the conversion then works on the small image.
_RESIZE_FIRST = ("L", "RGB", "RGBA", "LA", "I", "F")


def _shrink(im: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _check_size(size: tuple[int, int], max_pixels: int, parameter: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise _bad("invalidImage", "image has no pixels", parameter)
    if w * h > max_pixels:
        raise _bad("imageTooLarge", f"image is {w}x{h} = {w * h} pixels, limit {max_pixels}", parameter)


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit sources: scale 0..65535 -> 0..255 (convert("RGB") would clip everything above 255 to white).
        scale = 257.0 if (mode.startswith("I;16") or mode == "I" or arr.max(initial=0) > 255) else 1.0
        arr8 = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "RGB":
        return im.copy() if im.readonly else im
    return im.convert("RGB")


# ----------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    rate: int
    channels: int
    seconds: float  # decoded duration


def sniff_audio(head: bytes) -> str | None:
    """Container kind from magic bytes, or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        # Frame sync: layer bits 00 mean ADTS AAC, anything else MPEG audio.
        return "aac" if (head[1] & 0x06) == 0 else "mp3"
    return None


def wav_declared_seconds(data: bytes) -> float | None:
    """The length a WAV header declares (``data`` chunk size / ``fmt `` byte rate), or None.

    FFmpeg's WAV demuxer reports the length of the bytes actually present, so a header claiming
    two hours on a 2 s file would pass the declared-duration check unseen; this reads the claim
    itself. The RIFF chunk walk is a few lines; Python's ``wave`` would refuse float and
    extensible WAVs that FFmpeg accepts."""
    pos, byte_rate, size = 12, 0, None
    while pos + 8 <= len(data) and size is None:
        cid, n = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt " and n >= 12 and pos + 20 <= len(data):
            byte_rate = int.from_bytes(data[pos + 16:pos + 20], "little")
        elif cid == b"data":
            size = n
        pos += 8 + n + (n & 1)  # chunks are word-aligned
    if size is None or byte_rate <= 0 or size in (0, 0xFFFFFFFF):  # 0 / all ones: "unknown" (streamed)
        return None
    return size / byte_rate


def _refuse_nested_open(url: Any, flags: Any, options: Any) -> Any:
    raise PermissionError(f"nested open refused: {url}")


def _run_audio(data: bytes, parameter: str, max_seconds: float,
               want_samples: bool) -> tuple[AudioInfo, np.ndarray | None]:
    import av  # local: keeps importing this module cheap for image-only callers

    kind = sniff_audio(data[:64])
    if kind is None:
        raise _bad("invalidAudio", "unsupported audio container (allowed: WAV, MP3, AAC, OGG, FLAC, M4A, WEBM)",
                   parameter)
    fmt, whitelist = _DEMUXERS[kind]
    if kind == "wav":
        declared_wav = wav_declared_seconds(data)
        if declared_wav is not None and declared_wav > max_seconds:
            raise _bad("audioTooLong", f"audio declares {declared_wav:.1f} s, limit {max_seconds:g} s", parameter)
    try:
        with av.open(
            io.BytesIO(data), mode="r", format=fmt, io_open=_refuse_nested_open,
            container_options={"format_whitelist": whitelist, "probesize": "5000000", "analyzeduration": "5000000"},
        ) as c:
            streams = list(c.streams)
            if len(streams) != 1 or streams[0].type != "audio":
                kinds = ", ".join(s.type for s in streams) or "none"
                raise _bad("invalidAudio", f"need exactly one audio stream, found: {kinds}", parameter)
            s = cast(av.AudioStream, streams[0])  # its type was checked above
            codec = s.codec_context.name
            if codec not in AUDIO_CODECS:
                raise _bad("invalidAudio", f"audio codec {codec!r} not allowed", parameter)
            rate = int(s.codec_context.sample_rate or s.rate or 0)
            channels = int(s.codec_context.channels or 0)
            if not (1 <= rate <= 384_000) or not (1 <= channels <= MAX_AUDIO_CHANNELS):
                raise _bad("invalidAudio", f"unsupported audio layout ({channels} ch at {rate} Hz)", parameter)
            declared = None
            if c.duration is not None:
                declared = c.duration / 1_000_000
            elif s.duration is not None and s.time_base is not None:
                declared = float(s.duration * s.time_base)
            if declared is not None and declared > max_seconds:
                raise _bad("audioTooLong", f"audio is {declared:.1f} s, limit {max_seconds:g} s", parameter)
            resampler = (av.AudioResampler(format="fltp", layout=s.codec_context.layout, rate=rate)
                         if want_samples else None)
            chunks: list[np.ndarray] = []
            n = 0
            limit = int(max_seconds * rate) + 1
            for frame in c.decode(s):
                n += frame.samples
                if n > limit:  # count what decodes: a header can claim 1 s and carry an hour
                    raise _bad("audioTooLong", f"the decoded audio exceeds {max_seconds:g} s", parameter)
                if resampler is not None:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray())
            if n == 0:
                raise _bad("invalidAudio", "no audio could be decoded", parameter)
            info = AudioInfo(codec=codec, rate=rate, channels=channels, seconds=n / rate)
            samples = None
            if want_samples:
                samples = (np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0))).astype(np.float32)
            return info, samples
    except InvalidRequest:
        raise
    except MemoryError:
        raise _bad("invalidAudio", "audio too large to decode", parameter) from None
    except Exception:  # noqa: BLE001 - FFmpeg errors have many types; none may escape as a 500
        # FFmpeg's text ("InvalidDataError: [Errno 1094995529] ...") means nothing to a client.
        raise _bad("invalidAudio", "The audio could not be read: it is corrupt, truncated or not in a supported "
                   "format (WAV, MP3, AAC, OGG, FLAC, M4A, WEBM).", parameter) from None


def probe_audio(data: bytes, *, parameter: str, max_seconds: float) -> AudioInfo:
    """Validate untrusted audio bytes fully (decodes once to count samples). Codes: ``invalidAudio``,
    ``audioTooLong``."""
    info, _ = _run_audio(data, parameter, max_seconds, want_samples=False)
    return info


def decode_audio(data: bytes, *, parameter: str, max_seconds: float) -> tuple[np.ndarray, int]:
    """Same checks as :func:`probe_audio`; returns float32 samples shaped (channels, n) and the rate."""
    info, samples = _run_audio(data, parameter, max_seconds, want_samples=True)
    assert samples is not None  # internal invariant, not input validation
    return samples, info.rate

"""Turn user media references into checked files in storage.

A reference (``inputs.frameImages[].image``, ``inputs.audio``, ``imageUpload.image``,
``mediaStorage.media``) may be an ``imageUUID``/``mediaUUID`` this server issued, an http(s)
URL (fetched through :mod:`wanflash.api.ssrf`: public addresses only unless
``allow_loopback_fetch``), a ``data:<mime>;base64,...`` URI, or raw base64 (protocol §4).

Images are decoded with Pillow (``verify`` first, then a full load with EXIF orientation
applied, converted to RGB, pixel count capped) and stored as PNG, so the worker reads one
known format. Audio is kept as sent after PyAV has demuxed it, found exactly one audio stream,
and counted the decoded duration (capped). Every failure is an :class:`InvalidRequest` naming
the parameter, never a 500. Decoding runs in a thread: it is CPU work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wanflash.api.ssrf import fetch_bytes
from wanflash.api.validation import ResolvedInputs
from wanflash.errors import InvalidRequest, RunwareError

if TYPE_CHECKING:
    from wanflash.api.protocol import VideoInferenceTask
    from wanflash.config import Settings
    from wanflash.jobs.service import JobService
    from wanflash.storage.local import LocalStore

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w-]+=[^;,]*)*;base64,", re.IGNORECASE)
_B64_CHARS = re.compile(rb"^[A-Za-z0-9+/=_\-\s]+$")

# demuxer names PyAV reports -> the extension we store audio under
_AUDIO_EXT = {"wav": "wav", "mp3": "mp3", "ogg": "ogg", "flac": "flac", "mov,mp4,m4a,3gp,3g2,mj2": "m4a"}


@dataclass(frozen=True)
class _Where:
    """Which parameter of which task a reference came from (for error items)."""

    parameter: str
    code: str
    task_type: str
    task_uuid: str | None


def _fail(where: _Where, message: str, code: str | None = None) -> InvalidRequest:
    return InvalidRequest([RunwareError(code or where.code, message, parameter=where.parameter,
                                        task_type=where.task_type, task_uuid=where.task_uuid)])


def _retag(exc: InvalidRequest, where: _Where) -> InvalidRequest:
    return InvalidRequest([replace(e, task_type=e.task_type or where.task_type,
                                   task_uuid=e.task_uuid or where.task_uuid) for e in exc.errors], exc.status)


def _b64decode(text: str, where: _Where, max_bytes: int) -> bytes:
    if len(text) > (max_bytes * 4) // 3 + 8:
        raise _fail(where, f"{where.parameter} is larger than {max_bytes} bytes.", "inputTooLarge")
    raw = "".join(text.split())
    try:
        if "-" in raw or "_" in raw:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _fail(where, f"{where.parameter} is not valid base64, a data URI, a URL or a known UUID.") from None


class InputResolver:
    def __init__(self, settings: "Settings", jobs: "JobService", storage: "LocalStore") -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage

    async def _bytes(self, ref: str, where: _Where) -> bytes:
        ref = ref.strip()
        if _UUID.match(ref):
            upload = await self.jobs.get_upload(ref.lower())
            if upload is None:
                raise _fail(where, f"No uploaded image or media with UUID '{ref}' exists on this server.")
            return await asyncio.to_thread(self.storage.read_bytes, upload.key)
        low = ref[:16].lower()
        if low.startswith(("http://", "https://")):
            try:
                return await fetch_bytes(ref, parameter=where.parameter, max_bytes=self.settings.max_input_bytes,
                                         deadline_s=self.settings.fetch_timeout_seconds,
                                         allow_loopback=self.settings.allow_loopback_fetch)
            except InvalidRequest as exc:
                raise _retag(exc, where) from None
        if low.startswith("data:"):
            m = _DATA_URI.match(ref)
            if not m:
                raise _fail(where, f"{where.parameter} is a data URI without ';base64,'.")
            return _b64decode(ref[m.end():], where, self.settings.max_input_bytes)
        return _b64decode(ref, where, self.settings.max_input_bytes)

    # -- images

    def _decode_image(self, data: bytes, where: _Where) -> tuple[bytes, tuple[int, int]]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
                if w * h > self.settings.max_image_pixels:
                    raise _fail(where, f"The image is {w}x{h}; at most {self.settings.max_image_pixels} pixels "
                                "are accepted.")
                probe.verify()  # structure check before decoding any pixels
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                rgb = ImageOps.exif_transpose(im).convert("RGB")
        except InvalidRequest:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _fail(where, f"{where.parameter} is not a readable image ({type(exc).__name__}).") from None
        out = io.BytesIO()
        rgb.save(out, format="PNG", compress_level=1)  # speed over size: it is an internal file
        return out.getvalue(), rgb.size

    async def store_image(self, ref: str, key: str, where: _Where) -> tuple[int, int]:
        data = await self._bytes(ref, where)
        png, size = await asyncio.to_thread(self._decode_image, data, where)
        await asyncio.to_thread(self.storage.put_bytes, key, png)
        return size

    # -- audio

    def _probe_audio(self, data: bytes, where: _Where) -> tuple[str, float]:
        import av

        try:
            with av.open(io.BytesIO(data)) as c:
                streams = c.streams.audio
                if len(streams) != 1 or c.streams.video:
                    raise _fail(where, f"{where.parameter} must hold exactly one audio stream and no video.")
                stream = streams[0]
                limit = self.settings.max_audio_seconds
                if c.duration is not None and c.duration / 1e6 > limit + 1:
                    raise _fail(where, f"The audio is longer than {limit:g} s.")
                samples = 0
                for frame in c.decode(stream):  # headers can lie: count what decodes
                    samples += frame.samples
                    if samples / stream.rate > limit + 1:
                        raise _fail(where, f"The audio is longer than {limit:g} s.")
                fmt = c.format.name
        except InvalidRequest:
            raise
        except (av.FFmpegError, ValueError, IndexError, ZeroDivisionError) as exc:
            raise _fail(where, f"{where.parameter} is not readable audio ({type(exc).__name__}).") from None
        if samples == 0:
            raise _fail(where, f"{where.parameter} holds no audio samples.")
        ext = _AUDIO_EXT.get(fmt, fmt.split(",")[0] if fmt else "bin")
        return ext, samples / stream.rate

    # -- public

    async def resolve(self, task: "VideoInferenceTask") -> ResolvedInputs:
        """Fetch, check and store the task's inputs under ``inputs/<taskUUID>/``."""
        tu = task.taskUUID
        image_key = image_size = audio_key = audio_seconds = None
        if task.inputs and task.inputs.frameImages:
            where = _Where("inputs.frameImages[0].image", "invalidImage", "videoInference", tu)
            image_key = f"inputs/{tu}/image.png"
            image_size = await self.store_image(task.inputs.frameImages[0].image, image_key, where)
        if task.inputs and task.inputs.audio:
            where = _Where("inputs.audio", "invalidAudio", "videoInference", tu)
            data = await self._bytes(task.inputs.audio, where)
            ext, audio_seconds = await asyncio.to_thread(self._probe_audio, data, where)
            audio_key = f"inputs/{tu}/audio.{ext}"
            await asyncio.to_thread(self.storage.put_bytes, audio_key, data)
        return ResolvedInputs(image_key=image_key, image_size=image_size, audio_key=audio_key,
                              audio_seconds=audio_seconds)

    async def upload_image(self, ref: object, task_uuid: str | None) -> tuple[str, str]:
        """``imageUpload``: returns (imageUUID, storage key)."""
        where = _Where("image", "invalidImage", "imageUpload", task_uuid)
        if not isinstance(ref, str) or not ref:
            raise _fail(where, "image must be a non-empty string (data URI, base64, URL or imageUUID).",
                        "missingImage" if ref is None else "invalidImage")
        image_uuid = str(uuid.uuid4())
        key = f"uploads/{image_uuid}.png"
        await self.store_image(ref, key, where)
        await self.jobs.add_upload(image_uuid, "image", key, "image/png")
        return image_uuid, key

    async def upload_media(self, ref: object, task_uuid: str | None) -> tuple[str, str]:
        """``mediaStorage`` upload: any bytes (image, audio, video); returns (mediaUUID, key)."""
        where = _Where("media", "invalidMedia", "mediaStorage", task_uuid)
        if not isinstance(ref, str) or not ref:
            raise _fail(where, "media must be a non-empty string (base64, data URI or URL).",
                        "missingMedia" if ref is None else "invalidMedia")
        data = await self._bytes(ref, where)
        if not data:
            raise _fail(where, "media is empty.")
        media_uuid = str(uuid.uuid4())
        key = f"uploads/{media_uuid}.bin"
        await asyncio.to_thread(self.storage.put_bytes, key, data)
        await self.jobs.add_upload(media_uuid, "media", key, "application/octet-stream")
        return media_uuid, key

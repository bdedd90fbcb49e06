"""Turn user media references into checked files in storage.

A reference (``inputs.frameImages[].image``, ``inputs.audio``, ``imageUpload.image``,
``mediaStorage.media``) may be an ``imageUUID``/``mediaUUID`` this server issued, an http(s)
URL (fetched through :mod:`wanflash.net.ssrf`: public addresses only unless
``allow_loopback_fetch``), a ``data:<mime>;base64,...`` URI, or raw base64 (protocol §4).

All decoding is delegated to the hardened checks in :mod:`wanflash.media.checks`:
base64 is decoded strictly with the length cap applied before decoding; images go through a
format allow-list (JPEG/PNG/WEBP/GIF/BMP), a pixel cap read from the header, truncation
checks, EXIF orientation and RGB conversion, and are stored as PNG so the worker reads one
known format; audio is probed with a demuxer chosen by sniffing magic bytes (forced, no
nested file opens), exactly one allow-listed audio stream, declared and decoded duration
capped, and is kept as sent. Every failure is an :class:`InvalidRequest` naming the
parameter, never a 500. Decoding runs in a thread (``asyncio.to_thread``): it is CPU work
and must not stall WebSocket pings.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from wanflash.api import memory
from wanflash.contract.validation import ResolvedInputs
from wanflash.errors import InvalidRequest, RunwareError
from wanflash.media.checks import decode_base64_input, decode_image, probe_audio, sniff_audio
from wanflash.net.ssrf import fetch_bytes

log = logging.getLogger(__name__)
R = TypeVar("R")

if TYPE_CHECKING:
    from wanflash.config import LimitsConfig
    from wanflash.contract.protocol import VideoInferenceTask
    from wanflash.jobs.service import JobService
    from wanflash.storage.base import ObjectStore

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class _Where:
    """Which parameter of which task a reference came from (for error items)."""

    parameter: str
    code: str
    task_type: str
    task_uuid: str | None
    owner: str | None = None  # the caller's key digest: only its own uploads resolve


def _fail(where: _Where, message: str, code: str | None = None) -> InvalidRequest:
    return InvalidRequest([RunwareError(code or where.code, message, parameter=where.parameter,
                                        task_type=where.task_type, task_uuid=where.task_uuid)])


def _retag(exc: InvalidRequest, where: _Where) -> InvalidRequest:
    return InvalidRequest([replace(e, task_type=e.task_type or where.task_type,
                                   task_uuid=e.task_uuid or where.task_uuid) for e in exc.errors], exc.status)


class InputResolver:
    def __init__(self, limits: LimitsConfig, jobs: JobService, storage: ObjectStore) -> None:
        self.limits = limits
        self.jobs = jobs
        self.storage = storage
        # At most this many images/audio files decode at once in this process: each can hold
        # hundreds of MB while it does; the rest wait here, holding only their encoded bytes.
        self._decodes = asyncio.Semaphore(limits.max_concurrent_decodes)
        memory.map_large_allocations()

    async def _bytes(self, ref: str, where: _Where) -> bytes:
        ref = ref.strip()
        if _UUID.match(ref):
            upload = await self.jobs.get_upload(ref.lower())
            missing = _fail(where, f"No uploaded image or media with UUID '{ref}' exists on this server "
                                   "(uploads are deleted after a period without use).")
            # Another key's upload is answered exactly like one that does not exist.
            if upload is None or upload.owner != where.owner:
                raise missing
            await self.jobs.touch_upload(upload.upload_uuid)  # retention counts from the last use
            try:
                return await asyncio.to_thread(self.storage.read_bytes, upload.key)
            except FileNotFoundError:  # swept between the lookup and the read
                raise missing from None
        low = ref[:16].lower()
        if low.startswith(("http://", "https://")):
            try:
                return await fetch_bytes(ref, parameter=where.parameter, max_bytes=self.limits.max_input_bytes,
                                         deadline_s=self.limits.fetch_timeout_seconds,
                                         allow_loopback=self.limits.allow_loopback_fetch)
            except InvalidRequest as exc:
                raise _retag(exc, where) from None
        try:
            data = await asyncio.to_thread(decode_base64_input, ref, parameter=where.parameter,
                                           max_bytes=self.limits.max_input_bytes)
        except InvalidRequest as exc:
            raise _retag(exc, where) from None
        if data is None:  # a short string or something URL-like that is not http(s)
            raise _fail(where, f"{where.parameter} is not valid base64, a data URI, an http(s) URL or a known UUID.")
        return data

    # -- images

    def _decode_image(self, data: bytes, where: _Where) -> tuple[bytes, str, tuple[int, int]]:
        """Checked image bytes for the worker, their file suffix, and the size.

        The worker opens the stored file with a plain ``Image.open(...).convert("RGB")``. When that
        gives exactly the normalised pixels (no EXIF rotation, alpha or 16-bit to undo), the
        original bytes are stored as they are: re-encoding a 720p PNG costs ~60 ms on the submit
        path and ~25 ms more to decode in the worker. Otherwise the normalised pixels are stored as PNG.
        """
        try:
            rgb = decode_image(data, parameter=where.parameter, max_pixels=self.limits.max_image_pixels,
                               max_side=self.limits.max_stored_image_side)
        except InvalidRequest as exc:
            raise _retag(exc, where) from None
        plain = _plain_decode(data, rgb.size)
        if plain is not None and plain[1] == rgb.size and plain[2] == rgb.tobytes():
            return data, plain[0], rgb.size
        out = io.BytesIO()
        rgb.save(out, format="PNG", compress_level=1)  # speed over size: it is an internal file
        return out.getvalue(), "png", rgb.size

    async def store_image(self, ref: str, stem: str, where: _Where) -> tuple[str, tuple[int, int]]:
        """Check the image at ``ref`` and store it as ``<stem>.<suffix>``; returns (key, size)."""
        data = await self._bytes(ref, where)
        async with self._decodes:
            stored, suffix, size = await asyncio.to_thread(_then_trim, self._decode_image, data, where)
        key = f"{stem}.{suffix}"
        await asyncio.to_thread(self.storage.put_bytes, key, stored)
        return key, size

    # -- audio

    def _probe_audio(self, data: bytes, where: _Where) -> tuple[str, float]:
        try:
            info = probe_audio(data, parameter=where.parameter, max_seconds=self.limits.max_audio_seconds)
        except InvalidRequest as exc:
            raise _retag(exc, where) from None
        # probe_audio only accepts what sniff_audio recognised, so the kind names the container.
        return sniff_audio(data[:64]) or "bin", info.seconds

    # -- public

    async def resolve(self, task: VideoInferenceTask, owner: str | None = None) -> ResolvedInputs:
        """Fetch, check and store the task's inputs under ``inputs/<taskUUID>/``; an imageUUID/mediaUUID
        resolves only when ``owner`` (the caller's key digest) uploaded it."""
        tu = task.taskUUID
        image_key = image_size = audio_key = audio_seconds = None
        if task.inputs and task.inputs.frameImages:
            where = _Where("inputs.frameImages[0].image", "invalidImage", "videoInference", tu, owner)
            image_key, image_size = await self.store_image(task.inputs.frameImages[0].image,
                                                           f"inputs/{tu}/image", where)
        if task.inputs and task.inputs.audio:
            where = _Where("inputs.audio", "invalidAudio", "videoInference", tu, owner)
            try:
                data = await self._bytes(task.inputs.audio, where)
                async with self._decodes:
                    ext, audio_seconds = await asyncio.to_thread(_then_trim, self._probe_audio, data, where)
                audio_key = f"inputs/{tu}/audio.{ext}"
                await asyncio.to_thread(self.storage.put_bytes, audio_key, data)
            except Exception:
                await self.discard(ResolvedInputs(image_key=image_key))  # the image stored above
                raise
        return ResolvedInputs(image_key=image_key, image_size=image_size, audio_key=audio_key,
                              audio_seconds=audio_seconds)

    async def discard(self, inputs: ResolvedInputs) -> None:
        """Delete stored inputs of a submit that failed (best effort: the error already on its way
        to the client is what matters; a leftover is only disk)."""
        for key in (inputs.image_key, inputs.audio_key):
            if key is not None:
                try:
                    await asyncio.to_thread(self.storage.delete, key)
                except Exception:
                    log.warning("could not delete input %s of a refused task", key, exc_info=True)

    async def upload_image(self, ref: object, task_uuid: str | None, owner: str | None = None) -> tuple[str, str]:
        """``imageUpload``: returns (imageUUID, storage key); the upload belongs to ``owner``."""
        where = _Where("image", "invalidImage", "imageUpload", task_uuid, owner)
        if not isinstance(ref, str) or not ref:
            raise _fail(where, "image must be a non-empty string (data URI, base64, URL or imageUUID).",
                        "missingImage" if ref is None else "invalidImage")
        image_uuid = str(uuid.uuid4())
        key, _ = await self.store_image(ref, f"uploads/{image_uuid}", where)
        await self.jobs.add_upload(image_uuid, "image", key, IMAGE_TYPES[key.rsplit(".", 1)[1]], owner=owner)
        return image_uuid, key

    async def upload_media(self, ref: object, task_uuid: str | None, owner: str | None = None) -> tuple[str, str]:
        """``mediaStorage`` upload: any bytes (image, audio, video); returns (mediaUUID, key), owned by ``owner``."""
        where = _Where("media", "invalidMedia", "mediaStorage", task_uuid, owner)
        if not isinstance(ref, str) or not ref:
            raise _fail(where, "media must be a non-empty string (base64, data URI or URL).",
                        "missingMedia" if ref is None else "invalidMedia")
        data = await self._bytes(ref, where)
        if not data:
            raise _fail(where, "media is empty.")
        media_uuid = str(uuid.uuid4())
        key = f"uploads/{media_uuid}.bin"
        await asyncio.to_thread(self.storage.put_bytes, key, data)
        await self.jobs.add_upload(media_uuid, "media", key, "application/octet-stream", owner=owner)
        return media_uuid, key


def _then_trim(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)``, then hand the memory its decode freed back to the OS (see :mod:`wanflash.api.memory`)."""
    try:
        return fn(*args)
    finally:
        memory.trim()


# Formats whose bytes the worker may read as they came (``_decode_image``), by file suffix.
PASSTHROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _plain_decode(data: bytes, size: tuple[int, int]) -> tuple[str, tuple[int, int], bytes] | None:
    """(suffix, size, RGB bytes) of what a plain ``Image.open(...).convert("RGB")`` makes of
    ``data`` (already checked by ``decode_image``), or None for formats not passed through and
    for images whose header size is not ``size`` (scaled down on decode: never passed through,
    so they are not decoded a second time)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=tuple(PASSTHROUGH_FORMATS)) as im:
            if im.size != size:
                return None
            suffix = PASSTHROUGH_FORMATS[im.format or ""]
            rgb = im.convert("RGB")
            return suffix, rgb.size, rgb.tobytes()
    except Exception:  # noqa: BLE001 - any doubt means: store the normalised PNG instead
        return None

"""The object-store interface: bytes under keys, plus the key rules every backend shares.

A key is a relative, slash-separated path of safe characters (``outputs/<taskUUID>/0.mp4``,
``uploads/<uuid>.png``). :func:`check_key` refuses anything else (``..``, absolute paths,
backslashes, empty segments), so a key can never name a file outside the store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from wanflash.formats import OUTPUT_FORMATS

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

CONTENT_TYPES = {
    **{f.suffix: f.mime_type for f in OUTPUT_FORMATS.values()},
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".bin": "application/octet-stream",
}


class InvalidKey(ValueError):
    """The key is not a safe relative path."""


class StorageUnavailable(Exception):
    """The backend could not be reached or refused the request (network, credentials, 5xx).

    Distinct from a missing object (``FileNotFoundError``) so callers can retry the work later.
    """


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or len(key) > 512 or not all(_SEGMENT.match(p) for p in parts):
        raise InvalidKey(f"invalid storage key {key!r}")
    if any(p in (".", "..") for p in parts):
        raise InvalidKey(f"invalid storage key {key!r}")
    return key


def content_type_for(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return CONTENT_TYPES.get(suffix, "application/octet-stream")


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, src: Path) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the object, when the backend has one (the local store)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def presigned_url(self, key: str, expires_at: float) -> str | None:
        """A direct download URL valid until ``expires_at``, when the backend serves objects itself
        (S3); ``None`` when the server must serve them (the local store, or a link already expired)."""
        ...

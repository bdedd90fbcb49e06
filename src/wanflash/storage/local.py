"""Local-file object store (its objects are served by ``/media`` under :mod:`wanflash.signing`'s signed links).

:class:`LocalStore` keeps objects under ``<data_dir>/media/<key>``. Writes are atomic and
durable: the bytes go to a temporary file in the target directory, are fsynced, and are
renamed over the final name (then the directory is fsynced), so a reader sees the whole
object or nothing, even after a crash.

"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from wanflash.storage.base import check_key


class LocalStore:
    """Objects as files under ``root``; keys are checked with :func:`check_key`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomic(key, lambda out: out.write(data))

    def put_file(self, key: str, src: Path) -> None:
        def copy(out: BinaryIO) -> None:
            with open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)

        self._write_atomic(key, copy)

    def _write_atomic(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        """Temp file beside the destination, fsync, rename, fsync the directory: whole or absent."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=dest.suffix)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)

    def delete(self, key: str) -> None:
        """Remove the object (a missing one is fine) and the per-task directories it leaves empty.

        The top-level ones (``outputs/``, ``inputs/``) stay: a concurrent writer creating its own
        directory under them must never see its parent vanish."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent.parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break

    def presigned_url(self, key: str, expires_at: float) -> str | None:
        return None  # served by /media with a UrlSigner link


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

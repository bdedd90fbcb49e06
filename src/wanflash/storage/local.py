"""Local-file object store and the HMAC-signed URLs that serve it.

:class:`LocalStore` keeps objects under ``<data_dir>/media/<key>``. Writes are atomic and
durable: the bytes go to a temporary file in the target directory, are fsynced, and are
renamed over the final name (then the directory is fsynced), so a reader sees the whole
object or nothing, even after a crash.

:class:`UrlSigner` makes ``/media/<key>?exp=<unix>&sig=<b64url>`` links (reliability notes,
appendix E). The MAC covers the method, the path and the expiry, so a link cannot be moved to
another object or extended; :meth:`UrlSigner.verify` tells ``ok`` / ``expired`` / ``invalid``
apart so the HTTP layer can answer 200 / 410 / 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import quote, urlencode

from wanflash.storage.base import check_key

MEDIA_PREFIX = "/media/"


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


def persisted_secret(data_dir: Path, name: str, generate: Callable[[], str]) -> str:
    """A secret kept in ``data_dir/name``: read it, or generate it once, fsync'd, mode 0600."""
    path = Path(data_dir) / name
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    # O_EXCL: if two processes race, the loser reads the winner's secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    return value


def load_or_create_secret(data_dir: Path, configured: str | None) -> bytes:
    """The URL-signing key: from settings, else one generated once and kept in the data dir."""
    if configured:
        return configured.encode()
    return persisted_secret(data_dir, "url_secret", lambda: secrets.token_urlsafe(32)).encode()


Verdict = Literal["ok", "expired", "invalid"]


class UrlSigner:
    """HMAC-SHA256 signed, expiring media links."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, method: str, path: str, exp: int) -> str:
        msg = f"{method}\n{path}\n{exp}".encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def path_for(self, key: str) -> str:
        return MEDIA_PREFIX + quote(check_key(key))

    def sign(self, key: str, expires_at: float, *, method: str = "GET") -> str:
        """``/media/<key>?exp=..&sig=..`` (relative; the caller prefixes the base URL)."""
        path = self.path_for(key)
        exp = int(expires_at)
        return f"{path}?{urlencode({'exp': exp, 'sig': self._mac(method, path, exp)})}"

    def verify(self, path: str, exp: str | None, sig: str | None, *, method: str = "GET",
               now: float | None = None) -> Verdict:
        if exp is None or sig is None:
            return "invalid"
        try:
            exp_i = int(exp)
        except ValueError:
            return "invalid"
        if not hmac.compare_digest(self._mac(method, path, exp_i), sig):
            return "invalid"
        return "expired" if (time.time() if now is None else now) > exp_i else "ok"

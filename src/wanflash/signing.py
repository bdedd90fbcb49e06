"""Secrets and URL signing: the persisted HMAC keys, the signed ``/media`` links, the webhook signing key.

* :func:`persisted_secret`: a secret generated once and kept in the data directory (mode 0600, fsync'd, O_EXCL so
  racing processes agree), so every process sharing the directory signs and verifies alike.
* :func:`load_or_create_secret`: the URL-signing key (``WANFLASH_URL_SECRET``, else ``<data_dir>/url_secret``).
* :class:`UrlSigner` makes ``/media/<key>?exp=<unix>&sig=<b64url>`` links (reliability notes, appendix E). The MAC
  covers the method, the path and the expiry, so a link cannot be moved to another object or extended;
  :meth:`UrlSigner.verify` tells ``ok`` / ``expired`` / ``invalid`` apart so the HTTP layer can answer 200 / 410 / 403.
* :func:`load_or_create_webhook_secret`: the Standard Webhooks key (``WANFLASH_WEBHOOK_SECRET``, else
  ``<data_dir>/webhook_secret``); signing a message is :mod:`wanflash.delivery.webhook`'s.

API keys are hashed, not signed, and live with their ring in :mod:`wanflash.api.auth`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode

from wanflash.storage.base import check_key

MEDIA_PREFIX = "/media/"


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


SECRET_PREFIX = "whsec_"  # Standard Webhooks' secret prefix


def generate_secret(nbytes: int = 32) -> str:
    """A new ``whsec_`` webhook secret with ``nbytes`` random bytes (spec: 24-64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def load_or_create_webhook_secret(data_dir: Path, configured: str | None) -> str:
    """``WANFLASH_WEBHOOK_SECRET``, else a ``whsec_`` secret generated once and persisted."""
    if configured:
        return configured
    return persisted_secret(data_dir, "webhook_secret", generate_secret)

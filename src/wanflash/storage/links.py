"""Download links for stored objects, whatever the backend.

:class:`MediaLinks` gives the backend's own presigned URL when it has one (S3), and otherwise the
server's HMAC-signed ``/media/<key>`` link (local store; also any S3 link whose expiry has passed,
which ``/media`` then answers with 410). Responses, ``imageUpload`` and webhooks all go through it,
so one setting decides what every ``videoURL``/``imageURL`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wanflash.signing import UrlSigner
    from wanflash.storage.base import ObjectStore


class MediaLinks:
    def __init__(self, storage: ObjectStore, signer: UrlSigner) -> None:
        self.storage = storage
        self.signer = signer

    def url(self, key: str, expires_at: float, base_url: str) -> str:
        """An absolute URL for ``key`` valid until ``expires_at``; ``base_url`` prefixes server links."""
        direct = self.storage.presigned_url(key, expires_at)
        return direct if direct is not None else base_url.rstrip("/") + self.signer.sign(key, expires_at)

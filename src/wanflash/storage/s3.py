"""S3-compatible object store (AWS S3, MinIO, Garage, SeaweedFS, Ceph RGW, ...) through boto3.

:class:`S3Store` implements the :class:`~wanflash.storage.base.ObjectStore` interface: object
``<prefix><key>`` in one bucket, keys checked with :func:`check_key` like the local store. A PUT
is atomic on S3 (a reader sees the whole object or none), so there is no temp-file dance.

Download links are SigV4 presigned GET URLs. SigV4 caps a presigned URL at 7 days
(:data:`MAX_PRESIGN_SECONDS`), and a presign is relative to the moment of signing, so
:meth:`S3Store.presigned_url` signs *now* for the time left until the task's expiry
(``finished + ttl``): every poll gets a URL that dies at the same instant, never later. A link
whose expiry has passed is not minted at all (``None``): the caller then hands out the server's own
signed ``/media`` link, which answers 410 Gone, so an expired task never yields a working URL.

Errors: a missing object raises ``FileNotFoundError`` (as the local store does); anything else
the backend or network refuses raises :class:`StorageUnavailable` after botocore's own retries.
Checksums are sent only when an operation requires them (``when_required``): several
S3-compatible servers reject the CRC trailers boto3 sends by default since 1.36.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanflash.storage.base import StorageUnavailable, check_key, content_type_for

if TYPE_CHECKING:
    from wanflash.config import StorageConfig

MAX_PRESIGN_SECONDS = 604800  # SigV4: X-Amz-Expires must be at most 7 days

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Store:
    """Objects in ``bucket`` under ``prefix``; download links are SigV4 presigned GETs."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 public_endpoint_url: str | None = None, region: str = "us-east-1",
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 path_style: bool = False, max_attempts: int = 5) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=10, read_timeout=120,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                         region_name=region)
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigning is local computation: a second client only changes the host written into URLs.
        self._signer: Any = (session.client("s3", endpoint_url=public_endpoint_url, config=config)
                             if public_endpoint_url else self.client)

    @classmethod
    def from_config(cls, config: StorageConfig) -> S3Store:
        if not config.bucket:
            raise ValueError("WANFLASH_STORAGE=s3 needs WANFLASH_S3_BUCKET")
        return cls(config.bucket, prefix=config.prefix, endpoint_url=config.endpoint_url,
                   public_endpoint_url=config.public_endpoint_url, region=config.region,
                   access_key_id=config.access_key_id, secret_access_key=config.secret_access_key,
                   path_style=config.path_style)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, key: str, fn: Any, **kw: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None
            raise StorageUnavailable(f"S3 {what} {key!r} failed: {code or exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: upload_file's S3UploadFailedError
            raise StorageUnavailable(f"S3 {what} {key!r} failed: {exc}") from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                   ContentType=content_type_for(key))

    def put_file(self, key: str, src: Path) -> None:
        # upload_file switches to multipart above 8 MiB; S3 makes the object visible only when complete.
        self._call("put", key, self.client.upload_file, Filename=str(src), Bucket=self.bucket, Key=self._key(key),
                   ExtraArgs={"ContentType": content_type_for(key)})

    def read_bytes(self, key: str) -> bytes:
        obj = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return bytes(obj["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def presigned_url(self, key: str, expires_at: float, *, now: float | None = None) -> str | None:
        """A presigned GET valid until ``expires_at`` (at most 7 days from now); None once expired."""
        left = math.floor(expires_at - (time.time() if now is None else now))
        if left < 1:
            return None
        return str(self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=min(left, MAX_PRESIGN_SECONDS)))

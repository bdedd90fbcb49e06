"""Storage: where inputs and outputs live (local files or an S3-compatible bucket), by key.

:func:`create_store` picks the backend from the storage settings (``WANFLASH_STORAGE``); both the API (inputs, uploads)
and the worker (outputs) build their store with it, so one setting moves all media.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wanflash.config import StorageConfig
    from wanflash.storage.base import ObjectStore


def create_store(config: StorageConfig, data_dir: Path) -> ObjectStore:
    """The configured object store: ``local`` (``<data_dir>/media``) or ``s3``."""
    if config.backend == "s3":
        from wanflash.storage.s3 import S3Store

        return S3Store.from_config(config)
    from wanflash.storage.local import LocalStore

    return LocalStore(Path(data_dir) / "media")

"""API keys: accepted from settings (``WANFLASH_API_KEYS``) and from the database, stored hashed.

Keys made by ``wanflash keys create`` (or on the first ``serve --print-key``) look like
``wf_<id>_<secret>``; only the SHA-256 of the whole key is stored, and the raw key is shown
once. The digest is also the key's identity as an owner: every task and upload belongs to the
digest of the key that created it (settings keys and database keys alike, each its own owner).
Checking hashes the presented key and compares digests: settings keys with
:func:`hmac.compare_digest`, database keys by an indexed lookup of the digest (a preimage of
the digest is what an attacker would need, so lookup timing reveals nothing useful).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time
from typing import TYPE_CHECKING

from wanflash.jobs.source import KeyStore, db_path, open_job_source, refuse_terminal_writes

if TYPE_CHECKING:
    from wanflash.config import ServerConfig, Settings


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class KeyRing:
    def __init__(self, config: ServerConfig, store: KeyStore) -> None:
        self._static = [hash_key(k) for k in config.api_key_list]
        self._store = store

    def verify(self, raw: object) -> bool:
        if not isinstance(raw, str) or not raw or len(raw) > 512:
            return False
        return self.active(hash_key(raw))  # no early exit over static keys: same work whichever matches

    @property
    def inline_reads(self) -> bool:
        return self._store.inline_reads

    def active(self, digest: str) -> bool:
        """Whether the key with this digest is still accepted (settings keys always are; database
        keys until revoked). WebSocket sessions ask before every task."""
        ok = False
        for h in self._static:
            ok |= hmac.compare_digest(h, digest)
        return ok or self._store.key_hash_active(digest)

    def has_any(self) -> bool:
        return bool(self._static) or self._store.active_key_count() > 0


def create_key(store: KeyStore) -> tuple[str, str]:
    """A new key: returns (key_id, raw key). Only the hash is stored."""
    key_id = secrets.token_hex(4)
    raw = f"wf_{key_id}_{secrets.token_urlsafe(32)}"
    store.add_key(key_id, hash_key(raw))
    return key_id, raw


def ensure_first_key(config: ServerConfig, store: KeyStore) -> str | None:
    """On a fresh install (no key anywhere) create one and return it raw; otherwise None."""
    if KeyRing(config, store).has_any():
        return None
    return create_key(store)[1]


def keys_cli(settings: Settings, args: argparse.Namespace) -> int:
    """``wanflash keys create | list | revoke ID`` (in PostgreSQL when ``WANFLASH_DATABASE_URL`` is set)."""
    store = open_job_source(settings.jobs, outbox=refuse_terminal_writes, sqlite_path=db_path(settings.data_dir))
    try:
        if args.action == "create":
            key_id, raw = create_key(store)
            print(f"created key {key_id}; it is shown only once:\n{raw}")
            return 0
        if args.action == "list":
            rows = store.list_keys()
            if not rows:
                print("no keys (settings keys from WANFLASH_API_KEYS are not listed)")
            for r in rows:
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created))
                status = "revoked " + time.strftime("%Y-%m-%d", time.localtime(r.revoked)) if r.revoked else "active"
                print(f"{r.key_id}  created {created}  {status}")
            return 0
        if args.action == "revoke":
            if not args.key_id:
                print("usage: wanflash keys revoke KEY_ID", file=sys.stderr)
                return 2
            if store.revoke_key(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"no active key {args.key_id}", file=sys.stderr)
            return 1
        return 2
    finally:
        store.close()

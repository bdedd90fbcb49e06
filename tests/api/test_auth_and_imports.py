"""API keys (hash-only storage, CLI, first-start key) and the import rules (no torch; PyAV at startup)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks
from wanflash.api.auth import KeyRing, ensure_first_key, hash_key
from wanflash.cli import main as cli_main
from wanflash.config import Settings
from wanflash.jobs.source import db_path
from wanflash.jobs.store import SqliteJobSource


def test_keys_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "d")
    assert cli_main(["keys", "create", "--data-dir", data]) == 0
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert raw.startswith("wf_")
    settings = Settings(data_dir=Path(data))
    store = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)
    assert KeyRing(settings.server, store).verify(raw)
    assert not KeyRing(settings.server, store).verify(raw + "x")
    # Only the hash is on disk.
    assert raw.encode() not in db_path(settings.data_dir).read_bytes()
    assert store.key_hash_active(hash_key(raw))
    store.close()
    assert cli_main(["keys", "list", "--data-dir", data]) == 0
    key_id = raw.split("_")[1]
    assert key_id in capsys.readouterr().out
    assert cli_main(["keys", "revoke", key_id, "--data-dir", data]) == 0
    store = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)
    assert not KeyRing(settings.server, store).verify(raw)
    store.close()
    assert cli_main(["keys", "revoke", key_id, "--data-dir", data]) == 1


def test_first_key_only_once_and_settings_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)
    raw = ensure_first_key(settings.server, store)
    assert raw and KeyRing(settings.server, store).verify(raw)
    assert ensure_first_key(settings.server, store) is None
    with_env_key = Settings(data_dir=tmp_path / "other", api_keys="a, b")
    other = SqliteJobSource(db_path(with_env_key.data_dir), outbox=no_webhooks)
    assert ensure_first_key(with_env_key.server, other) is None  # settings keys count as keys
    ring = KeyRing(with_env_key.server, other)
    assert ring.verify("a") and ring.verify("b") and not ring.verify("c") and not ring.verify(None)
    store.close()
    other.close()


def test_api_does_not_import_torch() -> None:
    code = ("import wanflash.api, wanflash.api.app, wanflash.api.server, wanflash.compose, wanflash.worker.supervisor, "
            "wanflash.worker.group, wanflash.storage.s3, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'; assert 'diffusers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


_STARTUP_IMPORTS = """
import asyncio, sys, tempfile
from starlette.testclient import TestClient
from wanflash.compose import build_app
from wanflash.config import Settings

class Idle:  # an executor that never takes a job: only startup runs
    name, state = "idle", "loading"
    def start(self): pass
    async def wait_ready(self): await asyncio.Event().wait()
    async def run(self, job, on_progress): raise RuntimeError("unused")
    def cancel(self, task_uuid): pass
    async def restart(self): pass
    async def stop(self): pass

worker = sys.argv[1] == "worker"
app = build_app(Settings(data_dir=tempfile.mkdtemp()), executor=Idle() if worker else None, worker=worker)
with TestClient(app) as client:
    assert client.get("/health").status_code == 200
    print("av" in sys.modules)
"""


@pytest.mark.parametrize("role", ["worker", "api"])
def test_pyav_is_imported_at_startup_only_where_tasks_complete(role: str) -> None:
    # A lazy PyAV import holds the GIL ~50 ms; made by the first completion, it stalled every
    # request in flight (bench/RESULTS.md). API-only nodes never probe outputs and skip its RSS.
    out = subprocess.run([sys.executable, "-c", _STARTUP_IMPORTS, role], check=True, timeout=120,
                         capture_output=True, text=True).stdout.split()
    assert out[-1] == ("True" if role == "worker" else "False")

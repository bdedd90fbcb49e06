"""A real S3-compatible server on loopback for the S3 store tests: s3rver 3.7.1 (npm).

No MinIO/Garage/SeaweedFS/versitygw server build was found on PyPI, Debian or npm (and moto's
server mode ignores presigned-URL expiry), so the server is s3rver, pinned in ``tests/storage/s3rver/package-lock.json`` and installed with ``npm ci`` on
first use (so ``make test`` installs it on a clean clone). It is a separate process speaking S3
over HTTP with a filesystem backend; it enforces presigned-URL expiry and the 7-day
``X-Amz-Expires`` cap, but it does not recompute SigV4 signatures (a wrong signature is
accepted) and serves anonymous GETs (no private-bucket ACLs): signature bytes and bucket
privacy are only exercised against a real S3/MinIO, not here.

Skipped only when node/npm are missing or npm cannot install (offline), and never under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "s3rver"
BUCKET = "wanflash-test"
ACCESS_KEY = SECRET_KEY = "S3RVER"  # s3rver's built-in account


@dataclass
class S3Server:
    endpoint: str

    def settings_kw(self, **extra: object) -> dict[str, object]:
        """Settings fields for an S3 store on this server, under a fresh prefix per call."""
        kw: dict[str, object] = dict(storage="s3", s3_bucket=BUCKET, s3_endpoint_url=self.endpoint,
                                     s3_prefix=f"t-{uuid.uuid4().hex[:8]}", s3_access_key_id=ACCESS_KEY,
                                     s3_secret_access_key=SECRET_KEY, s3_path_style=True)
        kw.update(extra)
        return kw


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _unavailable("node/npm not installed: cannot run the s3rver test server")
    main = HERE / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if not main.is_file():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            _unavailable(f"npm ci (s3rver) failed: {proc.stderr[-2000:]}")
    data = tmp_path_factory.mktemp("s3rver")
    proc = subprocess.Popen([node, str(main), "--directory", str(data), "--address", "127.0.0.1", "--port", "0",
                             "--silent", "--configure-bucket", BUCKET], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the first line that names the port; s3rver picks it (port 0)
            seen.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                break
        else:
            raise RuntimeError(f"s3rver exited before listening: {''.join(seen)[-2000:]}")
        # Keep draining its output so a full pipe can never block the server.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield S3Server(f"http://127.0.0.1:{m.group(1)}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

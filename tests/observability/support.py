"""Helpers shared by the observability tests: submit over REST and wait for the end."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.api.support import API_KEY
from wanflash.testing import LiveServer

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def submit(server: LiveServer, **extra: Any) -> str:
    tu = str(uuid.uuid4())
    task = {"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash",
            "positivePrompt": "a red cube", "width": 960, "height": 960, "duration": 2, **extra}
    r = httpx.post(server.http_url + "/v1", json=[task], headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    return tu


def wait_done(server: LiveServer, tu: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(server.http_url + "/v1", json=[{"taskType": "getResponse", "taskUUID": tu}],
                       headers=HEADERS, timeout=30)
        body = r.json()
        if body.get("errors") or all(d.get("status") == "success" for d in body.get("data", [])):
            return body  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"task {tu} did not finish in {timeout} s")

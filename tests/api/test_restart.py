"""An API process killed with SIGKILL and restarted on the same data dir answers polls with the
same states: finished tasks keep their results, a task that was running is re-queued and
finishes, and its taskUUID is still taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.api.support import API_KEY

ROOT = Path(__file__).resolve().parents[2]


def start(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.api.serve_subprocess", str(data_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise RuntimeError(f"server did not start: {port!r}")
    return proc, f"http://127.0.0.1:{port}/v1"


def post(url: str, task: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url, json=[task], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    return r.json()  # type: ignore[no-any-return]


def submit(url: str, tu: str) -> dict[str, Any]:
    return post(url, {"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash",
                      "positivePrompt": "restart", "width": 960, "height": 960, "duration": 2, "seed": 5})


def poll(url: str, tu: str) -> dict[str, Any]:
    return post(url, {"taskType": "getResponse", "taskUUID": tu})


def wait_for(url: str, tu: str, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = poll(url, tu)
        if pred(reply):
            return reply
        time.sleep(0.2)
    raise AssertionError(f"timed out; last reply {reply}")


def done(reply: dict[str, Any]) -> bool:
    return bool(reply.get("data")) and reply["data"][0].get("status") == "success"


def running(reply: dict[str, Any]) -> bool:
    return bool(reply.get("data")) and "progress" in reply["data"][0]


def test_polls_survive_sigkill_and_restart(tmp_path: Path) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    proc, url = start(tmp_path)
    try:
        assert submit(url, a)["data"][0]["taskUUID"] == a
        before = wait_for(url, a, done)["data"][0]
        submit(url, b)
        wait_for(url, b, running)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    proc, url = start(tmp_path)
    try:
        after = poll(url, a)["data"][0]
        assert after["status"] == "success"
        assert (after["videoUUID"], after["seed"]) == (before["videoUUID"], before["seed"])
        path = httpx.URL(after["videoURL"]).path  # the port differs between the two processes
        assert path == httpx.URL(before["videoURL"]).path
        assert httpx.get(url.removesuffix("/v1") + path + "?" + after["videoURL"].split("?", 1)[1]).status_code == 200
        # The task that was running when the process died is re-queued and finishes.
        assert done(wait_for(url, b, done))
        assert submit(url, b)["errors"][0]["code"] == "conflictTaskUUID"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

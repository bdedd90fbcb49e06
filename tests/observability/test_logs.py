"""Structured logs: with ``log_json`` every line is one JSON object, and every line about a task
carries its ``taskUUID`` in the API process and in the executor child."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.support import make_settings
from tests.observability.support import submit, wait_done
from wanflash.observability.logs import configure_logging, task_context
from wanflash.testing import live_server


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def parse(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_carry_the_task_of_the_context(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    log = logging.getLogger("wanflash.test")
    log.info("outside")
    with task_context("t-1"):
        log.warning("inside %s", "a task")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.info("explicit", extra={"taskUUID": "t-2"})
    lines = [json.loads(x) for x in out.getvalue().splitlines()]  # every line is JSON
    assert [x.get("taskUUID") for x in lines] == [None, "t-1", "t-1", "t-2"]
    assert lines[1]["message"] == "inside a task" and lines[1]["level"] == "WARNING"
    assert "ValueError: boom" in lines[2]["exc"]  # type: ignore[operator]


def test_text_lines_name_the_task(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging(json_lines=False, stream=out)
    with task_context("t-9"):
        logging.getLogger("wanflash.test").info("hello")
    assert out.getvalue().rstrip().endswith("wanflash.test: hello [task t-9]")


def test_every_line_about_a_task_carries_its_uuid(tmp_path: Path, root_logging: None,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A failing task in the subprocess executor with a webhook that is refused: the router, the
    supervisor, the child and the webhook outbox all log about it."""
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    settings = make_settings(tmp_path / "data", executor="subprocess", log_json=True)
    with live_server(settings, pipeline_factory="tests.observability.pipelines:broken") as s:
        tu = submit(s, webhookURL="http://127.0.0.1:9/hook")  # port 9 (discard): connection refused
        body = wait_done(s, tu)
        assert body["errors"][0]["code"] == "inferenceError"
        for _ in range(100):
            if any("webhook" in str(x["message"]) for x in parse(out.getvalue())):
                break
            time.sleep(0.05)

    parent = parse(out.getvalue())
    child = [x for x in parse(capfd.readouterr().err) if x.get("process") == "child"]
    about = [x for x in parent + child if tu in str(x["message"])]
    assert about and all(x.get("taskUUID") == tu for x in about), about
    loggers = {x["logger"] for x in parent + child if x.get("taskUUID") == tu}
    assert {"wanflash.worker.supervisor", "wanflash.worker.render", "wanflash.delivery.outbox"} <= loggers, loggers
    failed = [x for x in child if x["logger"] == "wanflash.worker.render"]  # the render path, in the child
    assert failed and "RuntimeError: boom" in str(failed[0]["exc"]) and failed[0]["taskUUID"] == tu


def test_wanflash_serve_logs_json_lines(tmp_path: Path) -> None:
    """The real ``wanflash serve`` with WANFLASH_LOG_JSON, building and loading the tiny model:
    uvicorn's, diffusers' and transformers' lines are JSON too (no raw progress bars)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "WANFLASH_LOG_JSON": "1", "WANFLASH_API_KEYS": "k", "WANFLASH_EXECUTOR": "inprocess"}
    proc = subprocess.Popen([sys.executable, "-m", "wanflash.cli", "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:  # wait for the model: building and loading the tiny model logs through diffusers/transformers
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["executor"]["state"] != "loading":
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    records = [json.loads(ln) for ln in err.splitlines() if ln.strip()]  # every line is one JSON object
    assert any(r["logger"] == "uvicorn.access" and "/health" in str(r["message"]) for r in records), records
    assert any(r["logger"] == "uvicorn.error" and "Uvicorn running" in str(r["message"]) for r in records)


@pytest.mark.parametrize("json_lines", [False, True])
def test_urls_in_logs_keep_scheme_host_and_path_only(root_logging: None, json_lines: bool) -> None:
    """Query strings carry secrets (a webhook's ?token=, presigned signatures, /media sig): httpx's
    request lines, uvicorn's access log and our own warnings log scheme://host/path only."""
    import httpx

    out = io.StringIO()
    configure_logging(json_lines=json_lines, stream=out)
    # As `wanflash serve` runs uvicorn (log_config=None): its loggers propagate to the root handler. A
    # live test server earlier in the session applied uvicorn's own config (WARNING, no propagation).
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, logging.getLogger(n).disabled)
             for n in ("httpx", "uvicorn", "uvicorn.access")}
    for n in saved:
        logging.getLogger(n).setLevel(logging.INFO)
        logging.getLogger(n).propagate, logging.getLogger(n).disabled = True, False
    access = logging.getLogger("uvicorn.access")
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as client:
        client.post("https://hooks.example/in?token=SECRET1")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/media/outputs/x/0.mp4?exp=1&sig=SECRET2", "1.1",
                200)
    for n, (level, propagate, disabled) in saved.items():
        logging.getLogger(n).setLevel(level)
        logging.getLogger(n).propagate, logging.getLogger(n).disabled = propagate, disabled
    logging.getLogger("wanflash.delivery.outbox").warning("webhook %s to %s: %s after %d attempts", "m1",
                                                          "https://h.example/w?token=SECRET3", "exhausted", 5)
    logging.getLogger("wanflash.x").warning("PUT https://b.s3.example/k?X-Amz-Signature=SECRET4#f failed")
    text = out.getvalue()
    assert "SECRET" not in text, text
    if json_lines:
        text = "\n".join(str(r["message"]) for r in parse(text))
    for kept in ("https://hooks.example/in", '"GET /media/outputs/x/0.mp4 HTTP/1.1" 200', "https://h.example/w",
                 "after 5 attempts", "PUT https://b.s3.example/k failed"):
        assert kept in text, (kept, text)

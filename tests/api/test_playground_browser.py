"""The playground in headless Chromium (Debian's ``chromium`` driven by Playwright's Python API).

Load the page, see the estimated cost, submit with a wrong key and then a bad duration and see
the server's errors next to the key and duration fields, submit a good request from an uploaded file, watch the progress
(stage and step/total), see the result video play, and screenshot the page (not blank).
``make test`` installs chromium; without it the test skips, and fails when ``CI`` is set.
Playwright's own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.support import API_KEY, make_settings
from wanflash.contract.pricing import task_cost
from wanflash.testing import LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_true(page: object, expression: str, timeout: float = 15.0) -> None:
    """Poll a JS expression from Python. (``page.wait_for_function`` evaluates its predicate with
    ``eval`` inside the page, which the playground's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(0.05)


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is not installed (make test installs it with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (it is in the test extra)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path / "data", playground=True)
    with live_server(settings, pipeline_factory="tests.api.playground_pipeline:factory") as s:
        yield s


def test_playground_in_chromium(browser: object, server: LiveServer, tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)).save(frame)

    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))  # uncaught exceptions in the page

    page.goto(server.http_url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    assert "alibaba:wan@2.6-flash" in page.inner_text("#model")

    page.set_input_files("#file", str(frame))
    wait_true(page, "document.getElementById('imageInfo').textContent.includes('640×360')")
    page.fill("#prompt", "a red cube turns slowly")
    page.select_option("#size", "720p")
    page.fill("#duration", "2")
    expected = f"${task_cost('720p', 2, audio=True):.4f}"
    wait_true(page, f"document.getElementById('cost').textContent === {json.dumps(expected)}")
    assert "1280×720" in page.inner_text("#plan")

    # A wrong key: the server's invalidApiKey is shown next to the key field.
    page.fill("#apiKey", "not-a-key")
    page.click("#submit")
    wait_true(page, "document.getElementById('status').textContent === 'failed'", 15)
    assert "invalidApiKey" in page.inner_text(".field[data-param~='apiKey'] .error")
    page.fill("#apiKey", API_KEY)

    # A bad value: the server's Runware error is shown next to the field it names.
    page.fill("#duration", "20")
    page.click("#submit")
    wait_true(page, "document.getElementById('status').textContent === 'failed'", 15)
    duration_error = page.inner_text(".field[data-param~='duration'] .error")
    assert "invalidDuration" in duration_error and "15" in duration_error
    assert page.get_attribute(".field[data-param~='duration']", "class") == "field invalid"
    assert page.inner_text(".field[data-param~='positivePrompt'] .error") == ""

    # A good request: progress, then the result plays.
    page.fill("#duration", "2")
    wait_true(page, f"document.getElementById('cost').textContent === {json.dumps(expected)}")
    page.click("#submit")
    wait_true(page, r"/denoise step \d+\/10/.test(document.getElementById('stage').textContent)", 30)
    progress_seen = page.inner_text("#stage")
    page.wait_for_selector(".result video", timeout=60_000)
    wait_true(page,
              "(() => { const v = document.querySelector('.result video');"
              " return v && !v.error && v.readyState >= 2 && v.currentTime > 0; })()", 30)
    video = page.eval_on_selector(".result video", "v => ({w: v.videoWidth, h: v.videoHeight, d: v.duration})")
    assert (video["w"], video["h"]) == (1280, 720) and abs(video["d"] - 2.0) < 0.2

    sent = json.loads(page.inner_text("#json"))
    assert isinstance(sent, list) and len(sent) == 1
    task = sent[0]
    assert task["duration"] == 2 and task["resolution"] == "720p" and task["includeCost"] is True
    image_ref = task["inputs"]["frameImages"][0]["image"]
    assert re.fullmatch(r"[0-9a-f-]{36}", image_ref), image_ref  # the imageUUID from imageUpload
    assert page.inner_text(".result dd[data-field='cost']") == f"${task_cost('720p', 2, audio=True)}"
    assert page.inner_text(".result dd[data-field='NSFW']") == "not checked"
    assert page.inner_text(".result dd[data-field='seed']").isdigit()
    href = page.get_attribute(".result a.download", "href")
    assert href and href.startswith(server.http_url + "/media/outputs/" + task["taskUUID"])

    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20, f"screenshot looks blank (std {pixels.std():.1f})"
    assert len(np.unique(pixels)) > 64

    assert re.search(r"denoise step \d+/10", progress_seen)
    # Nothing left this server: no CDN, no other host.
    assert requested and all(u.startswith((server.http_url, server.ws_url, "data:")) for u in requested), requested
    assert not page_errors, page_errors

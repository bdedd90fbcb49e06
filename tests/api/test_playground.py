"""The playground's server side: off by default, static files with a strict CSP and no outside
URLs, the config the page is built from, and the estimate (the server's own plan and price)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import FAKE, make_settings
from wanflash.api.playground import STATIC
from wanflash.config import Settings
from wanflash.contract.pricing import task_cost
from wanflash.testing import LiveServer, live_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path_factory.mktemp("pg") / "data", playground=True),
                     pipeline_factory=FAKE) as s:
        yield s


def task(**kw: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
            "positivePrompt": "a cat", **kw}


def test_off_unless_enabled(tmp_path: Path) -> None:
    assert Settings().server.playground is False  # `make run` turns it on
    with live_server(make_settings(tmp_path / "data"), pipeline_factory=FAKE) as s:
        for path in ("/", "/playground/config.json", "/playground/playground.js"):
            assert httpx.get(s.http_url + path).status_code == 404, path


def test_page_and_static_files(server: LiveServer) -> None:
    r = httpx.get(server.http_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    for name, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        f = httpx.get(f"{server.http_url}/playground/{name}")
        assert f.status_code == 200 and kind in f.headers["content-type"]
        assert f.text == (STATIC / name).read_text()


def test_nothing_is_loaded_from_elsewhere() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        # No src/href/url()/@import/fetch/import pointing off this origin.
        assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text), path
        assert not re.search(r"""(url\(|@import|fetch\(|import\s*\(?)\s*["']?(https?:)?//""", text), path


def test_config_comes_from_the_validator(server: LiveServer) -> None:
    c = httpx.get(server.http_url + "/playground/config.json").json()
    assert c["model"] == "alibaba:wan@2.6-flash"
    assert [1280, 720] in c["sizes"]["720p"] and [1440, 1440] in c["sizes"]["1080p"]
    assert c["limits"]["duration"] == {"minimum": 2, "maximum": 15}
    assert c["limits"]["outputFormat"]["enum"] == ["MP4", "WEBM", "MOV"]
    assert c["formats"]["WEBM"] == {"suffix": ".webm", "mimeType": "video/webm"}  # the playground's download name
    assert c["defaults"] == {"duration": 5, "numberResults": 1, "outputFormat": "MP4", "outputQuality": 95,
                             "audio": True, "promptExtend": True, "shotType": "single", "safetyMode": "none"}


@pytest.mark.parametrize(("kw", "image", "cost", "size"), [
    ({"resolution": "720p", "duration": 6}, None, task_cost("720p", 6, audio=True), (1280, 720)),
    ({"width": 1440, "height": 1440, "numberResults": 2, "providerSettings": {"alibaba": {"audio": False}}},
     None, task_cost("1080p", 5, audio=False, number_results=2), (1440, 1440)),
    ({"resolution": "720p", "inputs": {"frameImages": ["some-uuid"]}}, [600, 1000],
     task_cost("720p", 5, audio=True), (720, 1280)),
])
def test_estimate_is_the_servers_plan(server: LiveServer, kw: dict[str, Any], image: list[int] | None,
                                      cost: float, size: tuple[int, int]) -> None:
    r = httpx.post(server.http_url + "/playground/estimate", json={"task": task(**kw), "imageSize": image})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["cost"] == cost and (e["width"], e["height"]) == size
    assert e["numFrames"] == e["duration"] * e["fps"]


def test_estimate_errors_name_the_parameter(server: LiveServer) -> None:
    r = httpx.post(server.http_url + "/playground/estimate",
                   json={"task": task(duration=1, width=1280, height=720, resolution="720p")})
    assert r.status_code == 400
    assert {e["parameter"] for e in r.json()["errors"]} == {"duration"}
    r = httpx.post(server.http_url + "/playground/estimate", json={"task": task(width=1280, height=720,
                                                                            resolution="720p")})
    assert [e["code"] for e in r.json()["errors"]] == ["conflictResolutionWidthHeight"]
    bad = httpx.post(server.http_url + "/playground/estimate", json={"task": task(), "imageSize": [0, 5]})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "invalidPayload"
    audio = httpx.post(server.http_url + "/playground/estimate",
                       json={"task": task(resolution="720p", inputs={"audio": "https://example.com/a.mp3"})})
    assert audio.json()["durationFollowsAudio"] is True

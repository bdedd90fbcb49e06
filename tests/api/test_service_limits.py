"""The hardening wired into the live service: media allow-lists, submit-time URL checks,
per-key 429 limits (REST Retry-After, WS error item) and the slow-body deadline.

Each test fails without its protection: a TIFF would be accepted, a link-local webhook queued,
a third burst request or a second in-flight task answered 200, and a dribbled body held open.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
import uuid
from pathlib import Path

import httpx
import websockets
from PIL import Image

from tests.api.support import API_KEY, FAKE, make_settings
from tests.api.test_ws_protocol import video_task
from wanflash.api.auth import hash_key
from wanflash.testing import live_server

HDR = {"Authorization": f"Bearer {API_KEY}"}


def _image_b64(fmt: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 10)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


async def test_image_format_allow_list_and_submit_url_checks(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d"), pipeline_factory=FAKE) as s:
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=20) as http:
            ok = await http.post("/v1", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": _image_b64("PNG")}])
            assert ok.status_code == 200 and ok.json()["data"][0]["imageUUID"]
            # TIFF decodes fine in Pillow but is outside the allow-list (JPEG/PNG/WEBP/GIF/BMP).
            r = await http.post("/v1", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": _image_b64("TIFF")}])
            e = r.json()["errors"][0]
            assert r.status_code == 400 and e["code"] == "invalidImage" and e["parameter"] == "image"
            assert "Unsupported image format" in e["message"] and e["taskType"] == "imageUpload"
            # Data after padding: strict base64 refuses it, naming the parameter.
            t = video_task(inputs={"frameImages": [{"image": "data:image/png;base64,QUJD=QUJDRA=="}]})
            e = (await http.post("/v1", json=[t])).json()["errors"][0]
            assert e["code"] == "invalidBase64" and e["parameter"] == "inputs.frameImages[0].image"
            assert e["taskUUID"] == t["taskUUID"]
            # Metadata address refused at submit even though the test settings allow loopback fetches.
            for name, url in (("webhookURL", "http://169.254.169.254/hook"), ("uploadEndpoint", "http://[::ffff:10.0.0.1]/x")):
                t = video_task(**{name: url})
                r = await http.post("/v1", json=[t])
                e = r.json()["errors"][0]
                assert r.status_code == 400 and e["parameter"] == name and e["taskUUID"] == t["taskUUID"], e
                assert (await http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": t["taskUUID"]}])).status_code == 404


async def test_rate_limit_429_rest_and_ws(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", rate_limit_per_s=0.05, rate_limit_burst=2)
    with live_server(settings, pipeline_factory=FAKE) as s:
        poll = {"taskType": "getResponse", "taskUUID": "00000000-0000-4000-8000-000000000000"}
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=20) as http:
            assert (await http.post("/v1", json=[poll])).status_code == 404
            assert (await http.post("/v1", json=[{"taskType": "ping"}])).status_code == 200  # pings are free
            assert (await http.post("/v1", json=[poll])).status_code == 404
            r = await http.post("/v1", json=[poll])
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["errors"][0]["code"] == "rateLimitExceeded"
        async with websockets.connect(s.ws_url) as ws:  # same key, same bucket
            await ws.send(json.dumps([{"taskType": "authentication", "apiKey": API_KEY}]))
            await asyncio.wait_for(ws.recv(), 10)
            t = video_task()
            await ws.send(json.dumps([t]))
            e = json.loads(await asyncio.wait_for(ws.recv(), 10))["errors"][0]
            assert e["code"] == "rateLimitExceeded" and e["taskUUID"] == t["taskUUID"]


async def test_in_flight_cap_counts_the_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", max_in_flight_per_key=1)
    with live_server(settings, pipeline_factory="tests.worker.fixture_pipelines:slow") as s:
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=20) as http:
            first = video_task()
            assert (await http.post("/v1", json=[first])).status_code == 200
            second = video_task()
            r = await http.post("/v1", json=[second])
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            e = r.json()["errors"][0]
            assert e["code"] == "rateLimitExceeded" and e["taskUUID"] == second["taskUUID"]
            assert s.services.store.get(second["taskUUID"]) is None
            # Another key is not affected by this key's tasks.
            s.services.store.add_key("k2", hash_key("other"))
            r = await http.post("/v1", json=[video_task()], headers={"Authorization": "Bearer other"})
            assert r.status_code == 200


def test_slow_body_gets_408(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d", body_deadline_seconds=0.5), pipeline_factory=FAKE) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(b"POST /v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[")
            start = time.monotonic()
            data = sock.recv(4096)  # without the deadline this blocks until the 10 s socket timeout
            assert data.startswith(b"HTTP/1.1 408"), data
            assert time.monotonic() - start < 5


async def test_body_and_ws_message_size_caps(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d", max_body_bytes=4096), pipeline_factory=FAKE) as s:
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=20) as http:
            r = await http.post("/v1", content=b"[" + b" " * 5000 + b"]")
            assert r.status_code == 413

            async def chunked():  # no Content-Length: counted as it arrives
                for _ in range(5):
                    yield b" " * 1000

            r = await http.post("/v1", content=chunked())
            assert r.status_code == 413
        async with websockets.connect(s.ws_url, max_size=None) as ws:
            await ws.send("[" + " " * 5000 + "]")
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1009
            else:
                raise AssertionError("oversized WebSocket message was accepted")

"""Bad bodies and smaller hardening items from the outside probe (issue 15, items 2 and 5).

Each fails on the code before the fix: a 100,000-deep JSON array was a 500 (REST) or a dropped
socket (WebSocket); 405/408/413 were text/plain; a failed task's poll was a 5xx and a batch with
one refusal was answered as if all of it failed; imageUpload took any taskUUID; decoder internals
leaked into messages; a forged Host header became the host of returned links.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from pathlib import Path

import httpx
import websockets

from tests.api.support import API_KEY, FAKE, make_settings
from tests.api.test_ws_protocol import Client, png_data_uri, video_task
from tests.delivery.receiver import receiver
from wanflash.testing import LiveServer, live_server

HDR = {"Authorization": f"Bearer {API_KEY}"}
DEEP = "[" * 100_000 + "]" * 100_000


def _envelope(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert list(body) == ["errors"] and body["errors"][0]["code"] == code, body
    assert body["errors"][0]["message"].endswith("."), body  # a plain sentence


async def test_deep_json_is_invalid_payload_on_rest_and_ws(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, headers=HDR, timeout=30) as http:
        _envelope(await http.post("/v1", content=DEEP), 400, "invalidPayload")
        # Within the parser's reach but deeper than any task: refused before anything walks it.
        _envelope(await http.post("/v1", content="[" * 500 + "]" * 500), 400, "invalidPayload")
        nested = video_task(positivePrompt=json.loads("[" * 200 + "]" * 200))
        _envelope(await http.post("/v1", json=[nested]), 400, "invalidPayload")
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        c = Client(ws)
        await ws.send(DEEP)
        r = await c.recv()
        assert r["errors"][0]["code"] == "invalidPayload"
        # The session goes on: ping and authentication still work on the same socket.
        assert await c.ask({"taskType": "ping", "ping": True}) == {"data": [{"taskType": "ping", "pong": True}]}
        assert "data" in await c.auth()


async def test_405_413_408_use_the_json_envelope(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d", max_body_bytes=4096, body_deadline_seconds=0.5),
                     pipeline_factory=FAKE) as s:
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=20) as http:
            r = await http.get("/v1")
            _envelope(r, 405, "methodNotAllowed")
            assert "POST" in r.headers.get("allow", "")
            _envelope(await http.post("/v1", content=b"[" + b" " * 5000 + b"]"), 413, "payloadTooLarge")

            async def chunked():  # no Content-Length: counted as it arrives (the middleware's path)
                for _ in range(5):
                    yield b" " * 1000

            _envelope(await http.post("/v1", content=chunked()), 413, "payloadTooLarge")
            _envelope(await http.get("/no/such/path"), 404, "notFound")
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(b"POST /v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[")
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head, data
        assert json.loads(body)["errors"][0]["code"] == "requestTimeout"


async def test_failed_task_poll_is_200_and_partial_batch_is_200(tmp_path: Path) -> None:
    with receiver() as rx, live_server(make_settings(tmp_path / "d"), pipeline_factory=FAKE) as s:
        rx.statuses = [403] * 10  # the uploadEndpoint refuses: the task fails after its ack (uploadFailed)
        async with httpx.AsyncClient(base_url=s.http_url, headers=HDR, timeout=30) as http:
            t = video_task(uploadEndpoint=rx.url + "/put")
            assert (await http.post("/v1", json=[t])).status_code == 200
            for _ in range(300):
                r = await http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": t["taskUUID"]}])
                if "errors" in r.json():
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text  # the poll succeeded; the task's failure is in errors[]
            assert r.json()["errors"][0]["code"] == "uploadFailed"

            ok, bad = video_task(), video_task(duration=99)
            r = await http.post("/v1", json=[ok, bad])
            body = r.json()
            assert r.status_code == 200, body  # one was accepted: not answered as a failed request
            assert body["data"] == [{"taskType": "videoInference", "taskUUID": ok["taskUUID"]}]
            assert body["errors"][0]["taskUUID"] == bad["taskUUID"]
            r = await http.post("/v1", json=[video_task(duration=99), video_task(duration=98)])
            assert r.status_code == 400  # nothing accepted: the refusal's status


async def test_upload_tasks_check_task_uuid(server: LiveServer) -> None:
    blob = base64.b64encode(bytes(range(256))).decode()
    async with httpx.AsyncClient(base_url=server.http_url, headers=HDR, timeout=30) as http:
        for task_type, extra in (("imageUpload", {"image": png_data_uri()}),
                                 ("mediaStorage", {"operation": "upload", "media": blob})):
            for tu, code in (("a", "invalidTaskUUID"), (None, "missingTaskUUID"), (7, "invalidTaskUUID"),
                             (str(uuid.uuid1()), "invalidTaskUUID")):
                task = {"taskType": task_type, **extra, **({"taskUUID": tu} if tu is not None else {})}
                r = await http.post("/v1", json=[task])
                e = r.json()["errors"][0]
                assert r.status_code == 400 and e["code"] == code and e["parameter"] == "taskUUID", (task_type, tu, e)
                assert e["taskType"] == task_type
            good = await http.post("/v1", json=[{"taskType": task_type, "taskUUID": str(uuid.uuid4()), **extra}])
            assert good.status_code == 200


async def test_decoder_errors_are_plain_sentences(server: LiveServer) -> None:
    bad_png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(200)) * 3).decode()
    bad_wav = base64.b64encode(b"RIFF\x00\x10\x00\x00WAVEfmt " + bytes(range(40)) * 5).decode()
    async with httpx.AsyncClient(base_url=server.http_url, headers=HDR, timeout=30) as http:
        for inputs in ({"frameImages": [{"image": bad_png}]}, {"audio": bad_wav}):
            r = await http.post("/v1", json=[video_task(inputs=inputs)])
            msg = r.json()["errors"][0]["message"]
            assert r.status_code == 400 and msg[0].isupper() and msg.endswith("."), msg
            for internal in ("Error", "Errno", "Exception", "[", "PIL", "av."):
                assert internal not in msg, msg


async def test_forged_host_header_never_becomes_a_link_host(server: LiveServer) -> None:
    task = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": png_data_uri()}
    async with httpx.AsyncClient(base_url=server.http_url, headers=HDR, timeout=30) as http:
        forged = await http.post("/v1", json=[task], headers={"Host": "attacker.example"})
        url = forged.json()["data"][0]["imageURL"]
        assert not url.startswith("http://attacker.example") and url.startswith(server.settings.server.base_url), url
        local = await http.post("/v1", json=[{**task, "taskUUID": str(uuid.uuid4())}],
                                headers={"Host": f"localhost:{server.port}"})
        assert local.json()["data"][0]["imageURL"].startswith(f"http://localhost:{server.port}/media/")
    async with websockets.connect(server.ws_url, additional_headers={"Host": "attacker.example"}) as ws:
        c = Client(ws)
        await c.auth()
        r = await c.ask({**task, "taskUUID": str(uuid.uuid4())})
        assert "attacker.example" not in r["data"][0]["imageURL"]

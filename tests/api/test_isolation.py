"""Tenant isolation (issue 15, item 1): every task and upload belongs to the API key that made it.

Two settings keys and one ``wanflash keys`` key, each its own owner. Another key's poll gets
exactly the answer an unknown taskUUID gets; another key's imageUUID/mediaUUID is "not found"
as input; ``/health`` (no key needed) names no task; a revoked key's open WebSocket is stopped at
its next task. Each assertion fails on the code before ownership existed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.api.support import FAKE, make_settings
from tests.api.test_ws_protocol import Client, png_data_uri, video_task
from wanflash.api.auth import create_key
from wanflash.testing import live_server

KEY_A, KEY_B = "tenant-a-key", "tenant-b-key"


def _hdr(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _post(http: httpx.AsyncClient, key: str, *tasks: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1", json=list(tasks), headers=_hdr(key))


async def _done(http: httpx.AsyncClient, key: str, tu: str) -> dict[str, Any]:
    for _ in range(300):
        r = (await _post(http, key, {"taskType": "getResponse", "taskUUID": tu})).json()
        if "errors" in r or all(i.get("status") == "success" for i in r["data"]):
            return r
        await asyncio.sleep(0.1)
    raise AssertionError("task did not finish")


def _same_as_unknown(other: httpx.Response, unknown: httpx.Response, tu: str, unknown_tu: str) -> None:
    assert other.status_code == unknown.status_code == 404
    assert other.json() == json.loads(unknown.text.replace(unknown_tu, tu))


async def test_keys_do_not_see_or_use_each_others_work(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", api_keys=f"{KEY_A},{KEY_B}")
    with live_server(settings, pipeline_factory=FAKE) as s:
        _, key_c = create_key(s.services.store)  # a `wanflash keys create` key: a third owner
        async with httpx.AsyncClient(base_url=s.http_url, timeout=30) as http:
            up = (await _post(http, KEY_A, {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                            "image": png_data_uri((64, 48))})).json()["data"][0]
            blob = base64.b64encode(bytes(range(256))).decode()  # mediaStorage keeps any bytes
            media = (await _post(http, KEY_A, {"taskType": "mediaStorage", "taskUUID": str(uuid.uuid4()),
                                               "operation": "upload", "media": blob})).json()["data"][0]
            t = video_task(inputs={"frameImages": [{"image": up["imageUUID"]}]})
            assert (await _post(http, KEY_A, t)).status_code == 200
            mine = await _done(http, KEY_A, t["taskUUID"])
            assert mine["data"][0]["videoURL"]  # the owner sees its result

            unknown_tu = str(uuid.uuid4())
            unknown = await _post(http, KEY_B, {"taskType": "getResponse", "taskUUID": unknown_tu})
            for other in (KEY_B, key_c):
                poll = await _post(http, other, {"taskType": "getResponse", "taskUUID": t["taskUUID"]})
                _same_as_unknown(poll, unknown, t["taskUUID"], unknown_tu)
                assert "videoURL" not in poll.text and "extendedPrompt" not in poll.text

                # Another key's imageUUID / mediaUUID is "not found", word for word as a UUID never issued.
                never = str(uuid.uuid4())
                for ref_path, theirs in ((("frameImages",), up["imageUUID"]), (("audio",), media["mediaUUID"])):
                    answers = []
                    for ref in (theirs, never):
                        inputs: dict[str, Any] = ({"frameImages": [{"image": ref}]} if ref_path == ("frameImages",)
                                                  else {"audio": ref})
                        task = video_task(inputs=inputs, taskUUID="00000000-0000-4000-8000-000000000001")
                        r = await _post(http, other, task)
                        assert r.status_code == 400
                        answers.append(json.dumps(r.json()).replace(ref, "<ref>"))
                    assert answers[0] == answers[1], answers
                    assert "No uploaded image or media with UUID" in answers[0]

            # conflictTaskUUID is global (the id is the primary key): another key learns only that the
            # UUID it sent is taken (README, Security and reliability).
            clash = await _post(http, KEY_B, video_task(taskUUID=t["taskUUID"]))
            assert clash.status_code == 400 and clash.json()["errors"][0]["code"] == "conflictTaskUUID"
            assert set(clash.json()["errors"][0]) == {"code", "message", "parameter", "taskType", "taskUUID"}

            # The third owner's own work is its own, and A cannot see it.
            tc = video_task()
            assert (await _post(http, key_c, tc)).status_code == 200
            assert (await _done(http, key_c, tc["taskUUID"]))["data"][0]["videoURL"]
            poll = await _post(http, KEY_A, {"taskType": "getResponse", "taskUUID": tc["taskUUID"]})
            assert poll.status_code == 404

            health = await http.get("/health")
            assert health.status_code == 200 and "running" not in health.json()
            assert t["taskUUID"] not in health.text and tc["taskUUID"] not in health.text
            assert health.json()["tasks"]["succeeded"] == 2  # counts, not ids


async def test_revoked_key_stops_an_open_websocket(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d"), pipeline_factory=FAKE) as s:
        key_id, raw = create_key(s.services.store)
        async with websockets.connect(s.ws_url) as ws:
            c = Client(ws)
            assert "data" in await c.auth(raw)
            first = await c.ask({"taskType": "getResponse", "taskUUID": str(uuid.uuid4())})
            assert first.get("errors", [{}])[0].get("code") \
                == "taskFailedOrNotFound", first  # authenticated: an ordinary answer
            s.services.store.revoke_key(key_id)
            t = video_task()
            r = await c.ask(t)
            e = r["errors"][0]
            assert e["code"] == "invalidApiKey" and e["taskUUID"] == t["taskUUID"]
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1008
        async with httpx.AsyncClient(base_url=s.http_url, timeout=30) as http:
            poll = await _post(http, raw, {"taskType": "getResponse", "taskUUID": t["taskUUID"]})
            assert poll.status_code == 401  # REST checks every request; and nothing was submitted
            assert s.services.store.get(t["taskUUID"]) is None


async def test_failed_authentications_close_the_socket(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "d"), pipeline_factory=FAKE) as s:
        async with websockets.connect(s.ws_url) as ws:
            await ws.send(json.dumps([{"taskType": "authentication", "apiKey": f"guess-{i}"} for i in range(500)]))
            frames = []
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            except websockets.ConnectionClosed:
                pass
            assert ws.close_code == 1008
            assert 1 <= len(frames) <= 5 and all(f["errors"][0]["code"] == "invalidApiKey" for f in frames)

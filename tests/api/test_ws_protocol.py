"""The /v1 WebSocket and REST contract over loopback with a raw client (exact frame shapes)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from typing import Any

import httpx
import websockets
from PIL import Image

from tests.api.support import API_KEY
from wanflash.testing import LiveServer

MODEL = "alibaba:wan@2.6-flash"


def png_data_uri(size: tuple[int, int] = (64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def video_task(**kw: Any) -> dict[str, Any]:
    t = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL, "positivePrompt": "a red cube",
         "width": 1280, "height": 720, "duration": 2, "deliveryMethod": "async"}
    t.update(kw)
    return t


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, *tasks: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(list(tasks)))

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), 20))

    async def ask(self, *tasks: dict[str, Any]) -> dict[str, Any]:
        await self.send(*tasks)
        return await self.recv()

    async def auth(self, key: str = API_KEY) -> dict[str, Any]:
        return await self.ask({"taskType": "authentication", "apiKey": key})

    async def wait_done(self, tu: str, timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = await self.ask({"taskType": "getResponse", "taskUUID": tu})
            if "errors" in r or all(i.get("status") == "success" for i in r["data"]):
                return r
            await asyncio.sleep(0.2)
        raise AssertionError("task did not finish")


async def connect(server: LiveServer, query: str = "?sdk=js&version=1.3.2") -> Client:
    return Client(await websockets.connect(server.ws_url + query, max_size=None))


async def test_auth_ping_and_bad_key(server: LiveServer) -> None:
    c = await connect(server)
    assert await c.ask({"taskType": "ping", "ping": True}) == {"data": [{"taskType": "ping", "pong": True}]}
    r = await c.ask({"taskType": "videoInference", "taskUUID": str(uuid.uuid4())})
    assert r["errors"][0]["code"] == "missingApiKey"
    bad = await c.auth("nope")
    assert bad == {"errors": [{"code": "invalidApiKey", "message": bad["errors"][0]["message"],
                               "parameter": "apiKey", "taskType": "authentication"}]}
    ok = await c.auth()
    assert list(ok) == ["data"] and len(ok["data"]) == 1
    item = ok["data"][0]
    assert item["taskType"] == "authentication" and "taskUUID" not in item
    assert uuid.UUID(item["connectionSessionUUID"]).version == 4
    again = await c.ask({"taskType": "authentication", "apiKey": API_KEY, "connectionSessionUUID": "s-1"})
    assert again["data"][0]["connectionSessionUUID"] == "s-1"
    await c.ws.close()


async def test_submit_poll_two_results_and_download(server: LiveServer) -> None:
    c = await connect(server)
    await c.auth()
    up = await c.ask({"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": png_data_uri()})
    image_uuid = up["data"][0]["imageUUID"]
    assert set(up["data"][0]) == {"taskType", "taskUUID", "imageUUID", "imageURL"}
    async with httpx.AsyncClient() as http:
        got = await http.get(up["data"][0]["imageURL"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"

    t = video_task(numberResults=2, includeCost=True, inputs={"frameImages": [{"image": image_uuid, "frame": "first"}]})
    ack = await c.ask(t)
    assert ack == {"data": [{"taskType": "videoInference", "taskUUID": t["taskUUID"]}]}
    first = await c.ask({"taskType": "getResponse", "taskUUID": t["taskUUID"]})
    assert len(first["data"]) == 2
    if first["data"][0]["status"] == "processing":
        assert all("videoURL" not in i and "videoUUID" not in i for i in first["data"])
    done = await c.wait_done(t["taskUUID"])
    items = done["data"]
    assert len(items) == 2 and {i["status"] for i in items} == {"success"}
    assert len({i["videoUUID"] for i in items}) == 2 and len({i["seed"] for i in items}) == 2
    assert all(i["taskType"] == "videoInference" and i["taskUUID"] == t["taskUUID"] and i["cost"] > 0 for i in items)
    again = await c.ask({"taskType": "getResponse", "taskUUID": t["taskUUID"]})
    assert again == done  # stable items and links on later polls
    async with httpx.AsyncClient() as http:
        r = await http.get(items[0]["videoURL"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    from wanflash.media.probe import probe_file

    path = server.settings.data_dir / "dl.mp4"
    path.write_bytes(r.content)
    info = probe_file(path)
    assert (info.width, info.height, info.frames) == (1280, 720, 32)
    await c.ws.close()


async def test_errors_duplicate_unknown_invalid(server: LiveServer) -> None:
    c = await connect(server)
    await c.auth()
    t = video_task()
    assert "data" in await c.ask(t)
    dup = await c.ask(t)
    assert dup["errors"][0]["code"] == "conflictTaskUUID" and dup["errors"][0]["taskUUID"] == t["taskUUID"]
    unknown = str(uuid.uuid4())
    r = await c.ask({"taskType": "getResponse", "taskUUID": unknown})
    assert r["errors"] == [{"code": "taskFailedOrNotFound", "message": r["errors"][0]["message"],
                            "parameter": "taskUUID", "taskType": "videoInference", "taskUUID": unknown}]
    bad = video_task(duration=99)
    r = await c.ask(bad)
    e = r["errors"][0]
    assert e["parameter"] == "duration" and e["taskType"] == "videoInference" and e["taskUUID"] == bad["taskUUID"]
    r = await c.ask(video_task(inputs={"frameImages": [{"image": "bm90IGFuIGltYWdl"}]}))
    assert r["errors"][0]["parameter"] == "inputs.frameImages[0].image"
    r = await c.ask(video_task(inputs={"frameImages": [{"image": str(uuid.uuid4())}]}))
    assert r["errors"][0]["code"] == "invalidImage"
    await c.ws.send("not json")
    assert (await c.recv())["errors"][0]["code"] == "invalidPayload"
    await c.ws.close()


async def test_rest(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        t = video_task()
        r = await http.post("/v1", json=[t])
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "missingApiKey"
        r = await http.post("/v1", json=[t], headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "invalidApiKey"
        r = await http.post("/v1", json=[{"taskType": "authentication", "apiKey": API_KEY}, t])
        assert r.status_code == 200 and r.json() == {"data": [{"taskType": "videoInference", "taskUUID": t["taskUUID"]}]}
        hdr = {"Authorization": f"Bearer {API_KEY}"}
        r = await http.post("/v1", json=[t], headers=hdr)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "conflictTaskUUID"
        r = await http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}], headers=hdr)
        assert r.status_code == 404
        r = await http.post("/v1", json=[video_task(resolution="480p")], headers=hdr)
        assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "resolution"
        r = await http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_media_links(server: LiveServer) -> None:
    storage, signer = server.services.storage, server.services.signer
    storage.put_bytes("outputs/x/0.mp4", b"\x00" * 10)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        url = signer.sign("outputs/x/0.mp4", time.time() + 60)
        r = await http.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert (await http.get(url.replace("sig=", "sig=A"))).status_code == 403
        assert (await http.get("/media/outputs/x/0.mp4")).status_code == 403
        assert (await http.get(signer.sign("outputs/x/0.mp4", time.time() - 1))).status_code == 410
        assert (await http.get(signer.sign("outputs/x/1.mp4", time.time() + 60))).status_code == 404
        assert (await http.get("/media/../etc/passwd")).status_code == 404

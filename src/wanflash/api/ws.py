"""The ``/v1`` WebSocket session (protocol §2, §10).

* Every inbound frame is a JSON array of task objects (a lone object is accepted too).
* ``ping`` is answered at once with ``{"data":[{"taskType":"ping","pong":true}]}`` in its own
  frame, before or after authentication.
* ``authentication`` is answered with ``{"data":[{"taskType":"authentication",
  "connectionSessionUUID":S}]}`` as the only item and without ``taskUUID`` (sdk-js matches on
  that), echoing a supplied session UUID; a bad key gets the ``invalidApiKey`` error the SDKs
  fail fast on.
* Any other task runs concurrently (a slow input fetch must not delay pongs) and its reply is
  sent as its own frame: one task's data or errors per frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from wanflash.api.auth import hash_key
from wanflash.api.tasks import Reply, error_reply

if TYPE_CHECKING:
    from wanflash.api.auth import KeyRing
    from wanflash.api.tasks import TaskRouter

log = logging.getLogger(__name__)

PONG = {"data": [{"taskType": "ping", "pong": True}]}
INVALID_KEY = {
    "code": "invalidApiKey",
    "message": "Invalid API key.",
    "parameter": "apiKey",
    "taskType": "authentication",
}


def http_base(ws: WebSocket) -> str:
    """The HTTP origin the client used, for links in replies (ws -> http, wss -> https)."""
    scheme = "https" if ws.url.scheme == "wss" else "http"
    host = ws.headers.get("host") or f"{ws.url.hostname}:{ws.url.port}"
    return f"{scheme}://{host}"


class Session:
    def __init__(self, ws: WebSocket, router: "TaskRouter", keys: "KeyRing") -> None:
        self.ws = ws
        self.router = router
        self.keys = keys
        self.authenticated = False
        self.session_uuid: str | None = None
        self.key_hash: str | None = None  # per-key limits are keyed by the hash, never the raw key
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = http_base(ws)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(frame, separators=(",", ":")))

    async def run(self) -> None:
        await self.ws.accept()
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                text = msg.get("text")
                if text is None and msg.get("bytes") is not None:
                    text = msg["bytes"].decode("utf-8", errors="replace")
                await self._frame(text or "")
        except WebSocketDisconnect:
            return
        finally:
            for t in self._tasks:
                t.cancel()

    async def _frame(self, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            await self.send(error_reply("invalidPayload", "Frames must be JSON arrays of task objects.").frame())
            return
        tasks = payload if isinstance(payload, list) else [payload]
        for task in tasks:
            task_type = task.get("taskType") if isinstance(task, dict) else None
            if task_type == "ping":
                await self.send(PONG)
            elif task_type == "authentication":
                await self._authenticate(task)
            elif not self.authenticated:
                tu = task.get("taskUUID") if isinstance(task, dict) else None
                await self.send(error_reply(
                    "missingApiKey", "Authenticate first: send an authentication task with your apiKey.",
                    status=401, parameter="apiKey", task_type=task_type if isinstance(task_type, str) else None,
                    task_uuid=tu if isinstance(tu, str) else None).frame())
            else:
                t = asyncio.create_task(self._run_task(task))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _authenticate(self, task: dict[str, Any]) -> None:
        ok = await asyncio.to_thread(self.keys.verify, task.get("apiKey"))
        if not ok:
            self.authenticated = False
            await self.send({"errors": [INVALID_KEY]})
            return
        self.authenticated = True
        self.key_hash = hash_key(task["apiKey"])
        given = task.get("connectionSessionUUID")
        self.session_uuid = given if isinstance(given, str) and given else (self.session_uuid or str(uuid.uuid4()))
        await self.send({"data": [{"taskType": "authentication", "connectionSessionUUID": self.session_uuid}]})

    async def _run_task(self, task: Any) -> None:
        reply: Reply = await self.router.handle(task, self.base_url, self.key_hash)
        try:
            if reply.data:
                await self.send({"data": reply.data})
            if reply.errors:
                await self.send({"errors": reply.errors})
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left; the task itself is durable and can be polled on a new connection

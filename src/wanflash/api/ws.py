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
* A frame that is not JSON, or nests deeper than the router allows, gets an ``invalidPayload``
  error frame and the session goes on (the parser's RecursionError never escapes).
* :data:`MAX_FAILED_AUTH` failed ``authentication`` tasks on one socket close it (policy
  violation, 1008): a socket is not a free key-guessing oracle.
* The key is checked again before every task: a key revoked with ``wanflash keys revoke`` gets an
  ``invalidApiKey`` error for that task and the socket is closed (1008).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from wanflash.api.auth import hash_key
from wanflash.api.hosts import link_base, trusted_hosts
from wanflash.api.tasks import Reply, error_reply, parse_tasks

if TYPE_CHECKING:
    from wanflash.api.auth import KeyRing
    from wanflash.api.tasks import TaskRouter
    from wanflash.config import Settings

log = logging.getLogger(__name__)

PONG = {"data": [{"taskType": "ping", "pong": True}]}
INVALID_KEY = {
    "code": "invalidApiKey",
    "message": "Invalid API key.",
    "parameter": "apiKey",
    "taskType": "authentication",
}
MAX_FAILED_AUTH = 5  # failed authentication tasks one socket may send before it is closed
POLICY_VIOLATION = 1008


def http_base(ws: WebSocket, settings: Settings) -> str:
    """The origin for links in replies (ws -> http, wss -> https); see :mod:`wanflash.api.hosts`."""
    scheme = "https" if ws.url.scheme == "wss" else "http"
    return link_base(settings.server, trusted_hosts(settings.server), scheme, ws.headers.get("host"))


class Session:
    def __init__(self, ws: WebSocket, router: TaskRouter, keys: KeyRing) -> None:
        self.ws = ws
        self.router = router
        self.keys = keys
        self.authenticated = False
        self.session_uuid: str | None = None
        self.key_hash: str | None = None  # per-key limits are keyed by the hash, never the raw key
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = http_base(ws, router.settings)
        self.failed_auth = 0
        self.closed = False

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
                if self.closed:
                    return
        except WebSocketDisconnect:
            return
        finally:
            for t in self._tasks:
                t.cancel()

    async def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code=POLICY_VIOLATION, reason=reason)
            except (WebSocketDisconnect, RuntimeError):
                pass  # already gone

    async def _frame(self, text: str) -> None:
        tasks = parse_tasks(text, what="A frame")
        if isinstance(tasks, Reply):
            await self.send(tasks.frame())
            return
        for task in tasks:
            if self.closed:
                return
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
            self.key_hash = None
            self.failed_auth += 1
            await self.send({"errors": [INVALID_KEY]})
            if self.failed_auth >= MAX_FAILED_AUTH:
                log.warning("closing a WebSocket after %d failed authentications", self.failed_auth)
                await self.close("too many failed authentications")
            return
        self.authenticated = True
        self.key_hash = hash_key(task["apiKey"])
        given = task.get("connectionSessionUUID")
        self.session_uuid = given if isinstance(given, str) and given else (self.session_uuid or str(uuid.uuid4()))
        await self.send({"data": [{"taskType": "authentication", "connectionSessionUUID": self.session_uuid}]})

    async def _key_still_active(self) -> bool:
        if self.key_hash is None:
            return False
        if self.keys.inline_reads:
            return self.keys.active(self.key_hash)
        return await asyncio.to_thread(self.keys.active, self.key_hash)

    async def _run_task(self, task: Any) -> None:
        if not await self._key_still_active():  # revoked since this socket authenticated
            self.authenticated = False
            tu = task.get("taskUUID") if isinstance(task, dict) else None
            try:
                await self.send({"errors": [{**INVALID_KEY, "message": "This API key has been revoked.",
                                             **({"taskUUID": tu} if isinstance(tu, str) else {})}]})
            except (WebSocketDisconnect, RuntimeError):
                pass
            await self.close("API key revoked")
            return
        reply: Reply = await self.router.handle(task, self.base_url, self.key_hash)
        try:
            if reply.data:
                await self.send({"data": reply.data})
            if reply.errors:
                await self.send({"errors": reply.errors})
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left; the task itself is durable and can be polled on a new connection

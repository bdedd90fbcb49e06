"""Per-key request-rate limits, and an ASGI body size/deadline guard.

* :class:`RateLimiter`: token bucket per key (``rate_per_s`` refill, ``burst`` capacity).
  ``check(key_id)`` takes one token and returns ``None``, or the seconds until one is available
  (send it as ``Retry-After`` with a 429; see :func:`retry_after_header`).
* The in-flight cap (``max_in_flight_per_key``) is counted in the job store at insert, so it holds
  across API replicas; it has no in-memory limiter here.
* The rate limiter is async-safe and thread-safe: each decision is a short critical section under a
  ``threading.Lock`` with no ``await`` inside, so no two coroutines can both take the last token.
* :class:`BodyLimits`: ASGI middleware answering **413** when a body is larger than
  ``max_body_bytes`` (declared ``Content-Length`` refused before the app runs; chunked bodies counted as
  they arrive) and **408** (``requestTimeout``) when the body is not completely received within ``body_deadline_s`` of
  the request start (slow-drip bodies), both in the JSON error envelope. It sends the error itself, then tells the app
  the client disconnected and swallows whatever the app does next, so the client never gets a 500 or a second
  response start. If the app had already started its response, nothing more is sent.
  It cannot bound header reading (that happens before any ASGI app runs): put a proxy with header
  timeouts in front or use a server that has them.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key: ``burst`` requests at once, refilled at ``rate_per_s``."""

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> float | None:
        """Take one token: ``None`` if allowed, else seconds until a token is available."""
        with self._lock:
            now = self.clock()
            b = self._buckets.get(key_id)
            if b is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                b = self._buckets[key_id] = _Bucket(float(self.burst), now)
            else:
                b.tokens = min(float(self.burst), b.tokens + (now - b.updated) * self.rate)
                b.updated = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return None
            return (1.0 - b.tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that would be full again carries no state worth keeping.
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]


class _Abort(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class BodyLimits:
    """ASGI middleware: 413 over ``max_body_bytes``, 408 if the body takes longer than ``body_deadline_s``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_deadline_s: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_deadline_s = body_deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_body_bytes:
                    if declared > 0:
                        await _respond(send, 413, "payloadTooLarge",
                                       f"The request body exceeds {self.max_body_bytes} bytes.")
                    else:
                        await _respond(send, 400, "invalidPayload", "The Content-Length header is not valid.")
                    return

        deadline = time.monotonic() + self.body_deadline_s
        late = f"The request body was not received within {self.body_deadline_s:g} seconds."
        received = 0
        body_done = False
        started = False
        aborted = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if aborted:
                return  # we already answered; drop the app's late (error) response
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def abort(status: int, code: str, text: str) -> Message:
            nonlocal aborted
            if not started:
                await _respond(send, status, code, text)
                aborted = True
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if aborted:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body only a disconnect can arrive; no deadline
            left = deadline - time.monotonic()
            if left <= 0:
                return await abort(408, "requestTimeout", late)
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return await abort(408, "requestTimeout", late)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    return await abort(413, "payloadTooLarge", f"The request body exceeds {self.max_body_bytes} bytes.")
                if not message.get("more_body", False):
                    body_done = True
            return message

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not aborted:
                raise
            # The app reacted to the disconnect we reported (e.g. ClientDisconnect); already answered.


async def _respond(send: Send, status: int, code: str, message: str) -> None:
    """An error in the API's JSON envelope, ``{"errors":[{"code","message"}]}``."""
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of the body is never read
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

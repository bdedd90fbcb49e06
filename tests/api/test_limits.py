"""Rate/in-flight limits and the BodyLimits middleware (413/408) under a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wanflash.api.limits import BodyLimits, RateLimiter, retry_after_header

# ----------------------------------------------------------------------------- rate / in-flight


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_then_retry_after() -> None:
    clock = Clock()
    rl = RateLimiter(rate_per_s=2, burst=5, clock=clock)
    assert [rl.check("k") for _ in range(5)] == [None] * 5
    ra = rl.check("k")
    assert ra == pytest.approx(0.5)
    assert retry_after_header(ra or 0) == "1"
    assert rl.check("other") is None  # keys are independent
    clock.t += 0.5
    assert rl.check("k") is None and rl.check("k") is not None
    clock.t += 100
    assert [rl.check("k") for _ in range(6)].count(None) == 5  # refill capped at burst


def test_burst_twice_limit_allows_exactly_limit() -> None:
    rl = RateLimiter(rate_per_s=1, burst=10, clock=Clock())
    results = [rl.check("k") for _ in range(20)]
    assert results.count(None) == 10 and all(r is not None and r > 0 for r in results[10:])


def test_rate_limiter_prunes_idle_keys() -> None:
    clock = Clock()
    rl = RateLimiter(rate_per_s=1, burst=1, clock=clock, max_keys=10)
    for i in range(10):
        rl.check(f"k{i}")
    clock.t += 5
    rl.check("new")
    assert len(rl._buckets) == 1


# ----------------------------------------------------------------------------- BodyLimits


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"n": len(body)})


def make_app(max_body: int = 1000, deadline: float = 0.5) -> BodyLimits:
    return BodyLimits(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), max_body, deadline)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    cfg = uvicorn.Config(make_app(), host="127.0.0.1", port=0, log_level="error", lifespan="off")
    srv = uvicorn.Server(cfg)
    task = asyncio.create_task(srv.serve())
    for _ in range(200):
        if srv.started:
            break
        await asyncio.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield port
    srv.should_exit = True
    await asyncio.wait_for(task, 5)


async def raw(port: int, head: bytes, body_parts: list[bytes] = (), gap: float = 0.0, limit_s: float = 5) -> tuple[int, float]:
    """Send a raw request (optionally dripping the body); return (status, seconds until status line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(head)
    await writer.drain()

    async def drip() -> None:
        try:
            for part in body_parts:
                writer.write(part)
                await writer.drain()
                if gap:
                    await asyncio.sleep(gap)
        except ConnectionError:
            pass

    dripper = asyncio.create_task(drip())
    try:
        line = await asyncio.wait_for(reader.readline(), limit_s)
        elapsed = time.monotonic() - t0
    finally:
        dripper.cancel()
        writer.close()
    return int(line.split()[1]), elapsed


async def test_small_body_passes(server: int) -> None:
    status, _ = await raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert status == 200


async def test_declared_oversize_413_without_reading(server: int) -> None:
    status, elapsed = await raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    assert status == 413 and elapsed < 1


async def test_chunked_oversize_413(server: int) -> None:
    chunk = b"x" * 400
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 10 + [b"0\r\n\r\n"]
    status, _ = await raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", parts)
    assert status == 413


async def test_chunked_within_limit_ok(server: int) -> None:
    parts = [b"3\r\nabc\r\n", b"0\r\n\r\n"]
    status, _ = await raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", parts)
    assert status == 200


async def test_slow_body_408_at_deadline(server: int) -> None:
    parts = [b"a"] * 100  # 1 byte / 100 ms: 10 s if allowed to continue
    status, elapsed = await raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                                parts, gap=0.1)
    assert status == 408 and 0.4 < elapsed < 2


async def test_no_second_response_start_when_app_already_responding() -> None:
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.body", "body": b""})

    msgs = iter([{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3)

    async def receive() -> dict:
        return next(msgs)

    async def send(m: dict) -> None:
        sent.append(m)

    await BodyLimits(app, 1000, 5)({"type": "http", "headers": []}, receive, send)
    assert [m["type"] for m in sent].count("http.response.start") == 1 and sent[0]["status"] == 200


async def test_websocket_scope_passes_through() -> None:
    seen = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    await BodyLimits(app, 1, 0.01)({"type": "websocket"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket"]

"""uploadEndpoint PUT against a scripted fake S3 on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.net.test_ssrf import LoopbackServer, Req, respond
from wanflash.delivery.upload import put_output
from wanflash.errors import JobFailed

S3_403 = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message><RequestId>X</RequestId></Error>"
)
PRESIGNED = "/bucket/out.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=content-type%3Bhost&X-Amz-Signature=ab"


def scripted(*replies: tuple[int, bytes]):
    it = iter(replies)

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        status, body = next(it, (200, b""))
        await respond(w, status, body)

    return h


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, s: float) -> None:
        self.calls.append(s)


async def test_put_bytes_raw_with_length_and_type_no_auth() -> None:
    payload = b"\x00mp4 bytes" * 1000
    async with LoopbackServer(scripted((200, b""))) as srv:
        await put_output(srv.url(PRESIGNED), payload, content_type="video/mp4", allow_loopback=True)
    (r,) = srv.requests
    assert r.method == "PUT" and r.path == PRESIGNED and r.body == payload
    assert r.headers["content-length"] == str(len(payload)) and r.headers["content-type"] == "video/mp4"
    assert "authorization" not in r.headers and "transfer-encoding" not in r.headers


async def test_put_file_streamed_with_content_length(tmp_path: Path) -> None:
    f = tmp_path / "out.mp4"
    f.write_bytes(b"v" * 3_000_001)
    async with LoopbackServer(scripted((200, b""))) as srv:
        await put_output(srv.url("/o"), f, content_type=None, allow_loopback=True)
    (r,) = srv.requests
    assert r.headers["content-length"] == "3000001" and r.body == f.read_bytes()
    assert "content-type" not in r.headers


async def test_403_xml_reported_verbatim_not_retried() -> None:
    sleeps = Sleeps()
    async with LoopbackServer(scripted((403, S3_403))) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url(PRESIGNED), b"x", content_type="video/mp4", allow_loopback=True, sleep=sleeps)
    assert ei.value.code == "uploadFailed" and ei.value.retryable is False
    assert "403" in ei.value.message and "AccessDenied: Request has expired" in ei.value.message
    assert len(srv.requests) == 1 and sleeps.calls == []


async def test_plain_4xx_body_excerpt() -> None:
    async with LoopbackServer(scripted((400, b"bad " * 500))) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url(), b"x", content_type=None, allow_loopback=True)
    assert "HTTP 400 (bad bad" in ei.value.message and len(ei.value.message) < 400


async def test_500_then_200_retried_with_backoff() -> None:
    sleeps = Sleeps()
    async with LoopbackServer(scripted((500, b"oops"), (503, b""), (200, b""))) as srv:
        await put_output(srv.url(), b"data", content_type=None, allow_loopback=True, sleep=sleeps, rng=lambda: 1.0,
                         base_delay_s=0.5)
    assert len(srv.requests) == 3 and all(r.body == b"data" for r in srv.requests)
    assert sleeps.calls == [0.5, 1.0]


async def test_5xx_exhausted_is_job_failure() -> None:
    async with LoopbackServer(scripted(*[(502, b"")] * 5)) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url(), b"d", content_type=None, allow_loopback=True, max_attempts=3,
                             sleep=Sleeps())
    assert len(srv.requests) == 3 and "after 3 attempts" in ei.value.message and "502" in ei.value.message


async def test_file_body_resent_on_retry(tmp_path: Path) -> None:
    f = tmp_path / "o.bin"
    f.write_bytes(b"abc" * 1000)
    async with LoopbackServer(scripted((500, b""), (200, b""))) as srv:
        await put_output(srv.url(), f, content_type=None, allow_loopback=True, sleep=Sleeps())
    assert [r.body for r in srv.requests] == [f.read_bytes()] * 2


async def test_redirect_not_followed() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        if req.path == "/put":
            await respond(w, 307, headers={"location": "/elsewhere"})
        else:
            await respond(w, 200)

    async with LoopbackServer(h) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url("/put"), b"x", content_type=None, allow_loopback=True, sleep=Sleeps())
    assert "307" in ei.value.message and "redirect" in ei.value.message
    assert [r.path for r in srv.requests] == ["/put"]


async def test_hang_times_out_and_retries() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with LoopbackServer(h) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url(), b"x", content_type=None, allow_loopback=True, attempt_timeout_s=0.3,
                             max_attempts=2, sleep=Sleeps())
    assert len(srv.requests) == 2 and "0.3 s" in ei.value.message


async def test_loopback_refused_by_default() -> None:
    async with LoopbackServer(scripted()) as srv:
        with pytest.raises(JobFailed) as ei:
            await put_output(srv.url(), b"x", content_type=None)
        await asyncio.sleep(0.05)
    assert "refused" in ei.value.message and srv.connections == 0
    with pytest.raises(JobFailed):
        await put_output("http://169.254.169.254/x", b"x", content_type=None, allow_loopback=True)

"""SSRF guard: each protection of wanflash.net.ssrf has a test that fails without it.

Network tests use a scripted HTTP/1.1 server on 127.0.0.1 (``LoopbackServer``, also used by the
webhook and upload tests) so the guarded httpx transport really connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from wanflash.errors import InvalidRequest
from wanflash.net import ssrf

# ----------------------------------------------------------------------------- loopback server


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Handler = Callable[[Req, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class LoopbackServer:
    """Minimal scripted HTTP/1.1 server on 127.0.0.1; records every request (and raw connections)."""

    handler: Handler
    requests: list[Req] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if hasattr(self._server, "close_clients"):
            self._server.close_clients()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = b""
            if "content-length" in headers:
                body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
            req = Req(method, path, headers, body, time.monotonic())
            self.requests.append(req)
            await self.handler(req, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    hdrs = {"content-length": str(len(body)), "connection": "close", **(headers or {})}
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    writer.write(head.encode() + body)
    await writer.drain()


def ok(body: bytes = b"hello") -> Handler:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await respond(w, 200, body)

    return h


def code_of(exc: pytest.ExceptionInfo[InvalidRequest]) -> str:
    (err,) = exc.value.errors
    return err.code


# ----------------------------------------------------------------------------- address table


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
        "169.254.1.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        "192.0.2.1", "198.18.0.1", "168.63.129.16", "100.100.100.200",
        "::", "::1", "fd00::1", "fd00:ec2::254", "fe80::1", "fec0::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::7f00:1", "::a9fe:a9fe",
        "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::", "2002:a9fe:a9fe::1",
        # Teredo: server 65.54.227.120, client 127.0.0.1 stored inverted (0x80ff_fffe)
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ],
)
def test_refused_addresses(addr: str) -> None:
    assert ssrf.address_refusal(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_allowed(addr: str) -> None:
    assert ssrf.address_refusal(ipaddress.ip_address(addr)) is None


def test_allow_loopback_admits_only_plain_loopback() -> None:
    for a in ("127.0.0.1", "127.0.0.2", "::1"):
        assert ssrf.address_refusal(ipaddress.ip_address(a), allow_loopback=True) is None
    for a in ("10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "fd00::1", "0.0.0.0"):
        assert ssrf.address_refusal(ipaddress.ip_address(a), allow_loopback=True) is not None


def test_metadata_message_names_rule() -> None:
    assert "metadata" in (ssrf.address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) or "")
    assert "NAT64" in (ssrf.address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) or "")


# ----------------------------------------------------------------------------- URL-stage refusals


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("gopher://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/x", "scheme"),
        ("http://example.com:22/", "port"),
        ("https://example.com:8443/", "port"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://2130706433/", "numeric"),
        ("http://127.1/", "numeric"),
        ("http://0x7f.0.0.1/", "numeric"),
        ("http://0177.0.0.1/", ""),  # httpx itself rejects the octal form
        ("http://127.0.0.1/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64"),
        ("http://[fe80::1]/", "link-local"),
    ],
)
async def test_refused_before_any_connection(url: str, needle: str) -> None:
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"] if host == "localhost" else []

    with pytest.raises(InvalidRequest) as ei:
        await ssrf.fetch_bytes(url, parameter="inputs.image", max_bytes=1000, deadline_s=5, resolver=resolver)
    (err,) = ei.value.errors
    assert err.code == "invalidInputUrl" and err.parameter == "inputs.image"
    assert needle.lower() in err.message.lower()


async def test_default_refuses_loopback_server_before_any_byte() -> None:
    """With the production default (allow_loopback=False) a live loopback server is never contacted."""
    async with LoopbackServer(ok()) as srv:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(InvalidRequest) as ei:
                await ssrf.fetch_bytes(
                    srv.url("/", host).replace(f":{srv.port}", ""), parameter="p", max_bytes=100, deadline_s=5
                )
            assert code_of(ei) == "invalidInputUrl"
            # Even with the port allowed by allow_loopback, default config stays closed:
            with pytest.raises(InvalidRequest):
                await ssrf.fetch_bytes(srv.url("/", host), parameter="p", max_bytes=100, deadline_s=5)
        await asyncio.sleep(0.05)
        assert srv.connections == 0


# ----------------------------------------------------------------------------- live fetches


async def test_fetch_ok_with_allow_loopback() -> None:
    async with LoopbackServer(ok(b"payload")) as srv:
        data = await ssrf.fetch_bytes(srv.url("/x"), parameter="p", max_bytes=100, deadline_s=5, allow_loopback=True)
    assert data == b"payload"
    assert srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"


async def test_connects_to_checked_address_without_second_lookup() -> None:
    """A name only our resolver knows: success proves httpx connected to the pinned IP, not the name."""
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    async with LoopbackServer(ok()) as srv:
        data = await ssrf.fetch_bytes(
            f"http://pinned.invalid:{srv.port}/", parameter="p", max_bytes=100, deadline_s=5,
            allow_loopback=True, resolver=resolver,
        )
    assert data == b"hello" and calls == ["pinned.invalid"]
    assert srv.requests[0].headers["host"] == f"pinned.invalid:{srv.port}"


async def test_rebinding_each_resolution_checked() -> None:
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def resolver(host: str, port: int) -> list[str]:
        return next(answers)

    async with LoopbackServer(ok()) as srv:
        url = f"http://rebind.invalid:{srv.port}/"
        assert await ssrf.fetch_bytes(url, parameter="p", max_bytes=10, deadline_s=5, allow_loopback=True,
                                      resolver=resolver) == b"hello"
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(url, parameter="p", max_bytes=10, deadline_s=5, allow_loopback=True,
                                   resolver=resolver)
        assert "metadata" in ei.value.errors[0].message
        assert srv.connections == 1


async def test_any_refused_answer_refuses() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "10.1.2.3"]

    with pytest.raises(InvalidRequest) as ei:
        await ssrf.fetch_bytes("http://mixed.invalid:8080/", parameter="p", max_bytes=10, deadline_s=5,
                               allow_loopback=True, resolver=resolver)
    assert "10.1.2.3" in ei.value.errors[0].message


async def test_nonstandard_port_only_for_loopback_even_when_allowed() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    with pytest.raises(InvalidRequest) as ei:
        await ssrf.fetch_bytes("http://public.invalid:6379/", parameter="p", max_bytes=10, deadline_s=5,
                               allow_loopback=True, resolver=resolver)
    assert "port" in ei.value.errors[0].message


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "file:///etc/passwd",
     "http://[::ffff:127.0.0.1]:{port}/", "http://[64:ff9b::7f00:1]:{port}/", "gopher://127.0.0.1:{port}/"],
)
async def test_redirect_to_internal_target_refused(location: str) -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        if req.path == "/start":
            await respond(w, 302, headers={"location": location.format(port=srv.port)})
        else:
            await respond(w, 200, b"secret")

    async with LoopbackServer(h) as srv:
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url("/start"), parameter="p", max_bytes=100, deadline_s=5, allow_loopback=True)
        assert code_of(ei) == "invalidInputUrl"
        assert [r.path for r in srv.requests] == ["/start"]


async def test_redirect_to_allowed_origin_followed_and_capped() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        n = int(req.path.strip("/") or 0)
        if n < 10:
            await respond(w, 302, headers={"location": f"/{n + 1}"})
        else:
            await respond(w, 200, b"done")

    async with LoopbackServer(h) as srv:
        assert await ssrf.fetch_bytes(srv.url("/7"), parameter="p", max_bytes=100, deadline_s=5,
                                      allow_loopback=True) == b"done"  # 3 redirects: allowed
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url("/6"), parameter="p", max_bytes=100, deadline_s=5, allow_loopback=True)
        assert code_of(ei) == "inputFetchFailed" and "redirects" in ei.value.errors[0].message


async def test_declared_oversize_refused() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 50000000\r\n\r\n" + b"x" * 1000)
        await w.drain()
        await asyncio.sleep(5)

    async with LoopbackServer(h) as srv:
        t0 = time.monotonic()
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url(), parameter="p", max_bytes=10_000, deadline_s=5, allow_loopback=True)
        assert code_of(ei) == "inputTooLarge" and time.monotonic() - t0 < 2


async def test_chunked_oversize_counted() -> None:
    """No Content-Length: bytes are counted while streaming; aborts at the cap, not at the end."""
    sent = 0

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"y" * 65536
        for _ in range(800):  # 50 MB if nobody stops reading
            w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await w.drain()
            sent += len(chunk)
        w.write(b"0\r\n\r\n")

    async with LoopbackServer(h) as srv:
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url(), parameter="p", max_bytes=1_000_000, deadline_s=10, allow_loopback=True)
        assert code_of(ei) == "inputTooLarge"
    assert sent < 10_000_000


async def test_slow_drip_hits_total_deadline() -> None:
    """1 byte every 50 ms never trips httpx's per-read timeout; the total deadline must."""

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(1000):
            w.write(b"z")
            await w.drain()
            await asyncio.sleep(0.05)

    async with LoopbackServer(h) as srv:
        t0 = time.monotonic()
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url(), parameter="p", max_bytes=10_000, deadline_s=1.0, allow_loopback=True)
        elapsed = time.monotonic() - t0
    assert code_of(ei) == "inputFetchFailed" and "1 s" in ei.value.errors[0].message
    assert 0.9 < elapsed < 3


async def test_dns_stall_bounded_by_deadline() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["127.0.0.1"]

    t0 = time.monotonic()
    with pytest.raises(InvalidRequest) as ei:
        await ssrf.fetch_bytes("http://slow-dns.invalid/", parameter="p", max_bytes=10, deadline_s=0.5,
                               resolver=resolver)
    assert code_of(ei) == "inputFetchFailed" and time.monotonic() - t0 < 2


async def test_http_error_status_and_connection_refused() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await respond(w, 404, b"nope")

    async with LoopbackServer(h) as srv:
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url(), parameter="p", max_bytes=100, deadline_s=5, allow_loopback=True)
        assert code_of(ei) == "inputFetchFailed" and "404" in ei.value.errors[0].message
        port = srv.port
    with pytest.raises(InvalidRequest) as ei:
        await ssrf.fetch_bytes(f"http://127.0.0.1:{port}/", parameter="p", max_bytes=100, deadline_s=5,
                               allow_loopback=True)
    assert code_of(ei) == "inputFetchFailed"


async def test_guarded_request_does_not_follow_redirects() -> None:
    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await respond(w, 302, headers={"location": "/other"})

    async with LoopbackServer(h) as srv:
        resp = await ssrf.guarded_request("POST", srv.url("/hook"), content=b"{}", allow_loopback=True)
    assert resp.status == 302 and [r.path for r in srv.requests] == ["/hook"]
    assert srv.requests[0].body == b"{}"


async def test_compressed_response_refused_and_identity_requested() -> None:
    import gzip

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await respond(w, 200, gzip.compress(b"\0" * 5_000_000), {"content-encoding": "gzip"})

    async with LoopbackServer(h) as srv:
        with pytest.raises(InvalidRequest) as ei:
            await ssrf.fetch_bytes(srv.url(), parameter="p", max_bytes=1_000_000, deadline_s=5, allow_loopback=True)
    assert code_of(ei) == "inputFetchFailed" and "gzip" in ei.value.errors[0].message
    assert srv.requests[0].headers["accept-encoding"] == "identity"


async def test_https_request_pinned_to_ip_with_sni_and_host() -> None:
    """Shape of what reaches the transport: IP literal URL, Host and TLS SNI/cert name = original host."""
    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def resolver(host: str, port: int) -> list[str]:
        return ["2606:4700::1111", "93.184.215.14"]

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        resp = await ssrf.guarded_request("POST", "https://hooks.example.com/x?y=1", content=b"{}",
                                          resolver=resolver, client=client)
    assert resp.status == 204
    (req,) = seen
    assert req.url.host == "93.184.215.14" and req.url.scheme == "https" and req.url.query == b"y=1"
    assert req.headers["host"] == "hooks.example.com"
    assert req.extensions["sni_hostname"] == "hooks.example.com"

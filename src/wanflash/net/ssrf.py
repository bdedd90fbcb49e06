"""SSRF-guarded outbound HTTP for every user-supplied URL (inputs, webhooks, uploadEndpoint).

Guarantees (reliability.md §1):

* scheme allow-list ``http``/``https``; userinfo refused; ports 80/443 only (any port, but only to a
  loopback address, when ``allow_loopback`` is set from ``Settings.allow_loopback_fetch`` for tests);
  non-canonical numeric hosts (``2130706433``, ``127.1``, ``0x7f.0.0.1``) refused by shape;
* the host is resolved **once** per hop and **every** answer is checked; a single refused answer
  refuses the URL. Refused: unspecified, loopback, private/ULA, CGNAT, link-local, multicast,
  reserved/documentation/benchmarking, deprecated site-local, everything outside IPv6 2000::/3, cloud
  metadata (169.254.169.254, fd00:ec2::254, 168.63.129.16, 100.100.100.200). IPv4-mapped,
  IPv4-compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32) addresses are decoded
  and the embedded IPv4 re-checked (local-use NAT64 64:ff9b:1::/48 refused outright);
* the connection goes to the checked IP literal (URL rewritten to the IP, ``Host`` header set to the
  original host, TLS SNI and certificate check on the original name via the ``sni_hostname`` extension),
  so there is no second DNS lookup to rebind; keep-alive is off so no TLS session is reused across hosts;
* redirects are never followed by httpx: :func:`fetch_bytes` follows at most 3 itself, re-checking each
  hop; :func:`guarded_request` (webhooks, uploads) returns 3xx as a response;
* ``Accept-Encoding: identity`` is sent and a compressed input response is refused (a gzip body would
  slip past the byte cap);
* the response body is streamed against a byte cap (declared ``Content-Length`` checked first, bytes
  counted anyway) and the whole operation (DNS + connect + send + read, all hops) runs under one
  ``asyncio`` deadline, because httpx timeouts are per read and a slow drip would defeat them.

Library choice: hand-written on top of httpx rather than ``ssrfguard`` 0.4.1 (the best design
reviewed in reliability.md §1.3). ssrfguard is a 3-month-old, single-author, self-described unaudited
0.x package of ~5,500 lines, and it still needs the byte cap and deadline added around it. The guard
this service needs is narrow (one client, no proxies), so it is kept small enough to audit here, fails
closed (IPv6 outside 2000::/3 is refused, IPv4 must be ``is_global`` and not multicast), and adds no
dependency. The interface (``URLRefused``/``FetchError``/``guarded_request``) would let ssrfguard be
swapped in later without touching callers.

DNS: ``getaddrinfo`` runs in the loop's executor and is bounded by the same deadline (the thread may
linger; the request does not). A ``resolver`` can be injected (tests, or a UDP resolver with its own
deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from ..errors import InvalidRequest, RunwareError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``async (host, port) -> [ip strings]``; the default wraps ``loop.getaddrinfo``."""

Content = bytes | Callable[[], AsyncIterator[bytes]] | None
"""Request body: bytes, or a factory of a fresh async iterator (called again if a connect is retried)."""

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 8192
STANDARD_PORTS = frozenset({80, 443})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_V4_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")

# A host whose last label is numeric is parsed as IPv4 by browsers/inet_aton (octal, hex, short forms).
_NUMERICISH_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


class URLRefused(Exception):
    """The URL or an address it resolves to is not allowed. Never retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FailureKind = Literal["timeout", "network", "too_large", "http", "redirects"]


class FetchError(Exception):
    """The request could not complete. ``kind`` says why; ``retryable`` whether a retry may help."""

    def __init__(self, reason: str, *, kind: FailureKind, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "network")


@dataclass(frozen=True)
class GuardedResponse:
    """A fully read (capped) response."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) host, no brackets
    port: int
    literal: IPAddress | None


# --------------------------------------------------------------------------------------- addresses


def address_refusal(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why a connection to ``ip`` is refused, or ``None`` if it is an ordinary public address.

    ``allow_loopback`` admits plain 127.0.0.0/8 and ::1 only, never a wrapped form or a private range.
    """
    if allow_loopback and (ip == _LOOPBACK_V6 or (ip.version == 4 and ip in _LOOPBACK_V4)):
        return None
    return _refusal(ip)


def _refusal(ip: IPAddress) -> str | None:
    if ip in _METADATA:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} has an IPv6 zone identifier"
        inner: list[tuple[str, ipaddress.IPv4Address]] = []
        if ip.ipv4_mapped is not None:
            inner.append(("IPv4-mapped", ip.ipv4_mapped))
        elif ip in _NAT64:
            inner.append(("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        elif ip in _NAT64_LOCAL:
            return f"{ip} is in local-use NAT64 prefix {_NAT64_LOCAL}"
        elif ip in _SIXTOFOUR:
            inner.append(("6to4", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)))
        elif ip in _TEREDO:
            # RFC 4380: server at bits 32-63, client stored with every bit inverted.
            inner.append(("Teredo server", ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)))
            inner.append(("Teredo client", ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)))
        elif ip in _V4_COMPAT and int(ip) > 1:
            inner.append(("IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        for label, v4 in inner:
            why = _refusal(v4)
            if why is not None:
                return f"{ip} is {label} for {v4}, and {why}"
        if inner:
            return None  # the packets go to a public IPv4 address
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast:
        return f"{ip} is multicast"
    if ip.version == 4 and ip in _CGNAT:
        return f"{ip} is shared address space (CGNAT 100.64.0.0/10)"
    if ip.is_private:
        return f"{ip} is a private or special-purpose address"
    if ip.is_reserved:
        return f"{ip} is reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _V6_GLOBAL_UNICAST:
        return f"{ip} is outside IPv6 global unicast 2000::/3"
    if not ip.is_global:
        return f"{ip} is not globally routable"
    return None


def _is_loopback(ip: IPAddress) -> bool:
    return ip == _LOOPBACK_V6 or (ip.version == 4 and ip in _LOOPBACK_V4)


# --------------------------------------------------------------------------------------- URLs


def check_url(url: str | httpx.URL, *, allow_loopback: bool = False) -> _Target:
    """Static checks (no DNS): scheme, userinfo, port, host shape. Raises :class:`URLRefused`."""
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        raise URLRefused(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise URLRefused(f"malformed URL ({e})") from None
    if u.scheme not in ("http", "https"):
        raise URLRefused(f"scheme {u.scheme!r} not allowed (http and https only)")
    if u.userinfo:
        raise URLRefused("credentials (user:password@) in URLs are not allowed")
    try:
        host = u.raw_host.decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError:
        raise URLRefused("host is not valid ASCII/IDNA") from None
    if not host or len(host) > 253:
        raise URLRefused("missing or overlong host")
    port = u.port if u.port is not None else (443 if u.scheme == "https" else 80)
    if port not in STANDARD_PORTS and not allow_loopback:
        raise URLRefused(f"port {port} not allowed (80 and 443 only)")
    literal: IPAddress | None = None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if "%" in host or ":" in host:
            raise URLRefused(f"host {host!r} is not a valid address") from None
        last = host.rsplit(".", 1)[-1]
        if _NUMERICISH_LABEL.match(last):
            # inet_aton would read 2130706433 / 127.1 / 0x7f.0.0.1 as an address; refuse the disguise.
            raise URLRefused(f"host {host!r} is a non-canonical numeric address") from None
    return _Target(url=u, host=host, port=port, literal=literal)


async def _default_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    target: _Target, *, allow_loopback: bool, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve once and check every answer; any refused answer refuses the URL."""
    if target.literal is not None:
        answers: list[IPAddress] = [target.literal]
    else:
        try:
            raw = await (resolver or _default_resolver)(target.host, target.port)
        except (OSError, UnicodeError):
            raise FetchError(f"cannot resolve the host name {target.host!r}", kind="network") from None
        answers = []
        for a in raw:
            try:
                ip = ipaddress.ip_address(a)  # keeps a %zone, which _refusal refuses
            except ValueError:
                raise URLRefused(f"resolver returned a non-address {a!r}") from None
            if ip not in answers:
                answers.append(ip)
        if not answers:
            raise FetchError(f"{target.host!r} has no addresses", kind="network")
    for ip in answers:
        why = address_refusal(ip, allow_loopback=allow_loopback)
        if why is not None:
            raise URLRefused(f"{target.host} resolves to a refused address: {why}")
    if target.port not in STANDARD_PORTS and not all(_is_loopback(ip) for ip in answers):
        raise URLRefused(f"port {target.port} not allowed (80 and 443 only)")
    # Prefer IPv4 first: hosts commonly publish AAAA records the machine has no route for.
    answers.sort(key=lambda ip: ip.version)
    return answers


# --------------------------------------------------------------------------------------- requests


def new_client(per_step_timeout_s: float = 15.0) -> httpx.AsyncClient:
    """The client every guarded request uses: no env proxies, no redirects, no keep-alive reuse."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(per_step_timeout_s),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def _read_capped(resp: httpx.Response, max_bytes: int, truncate: bool = False) -> bytes:
    """Read at most ``max_bytes``; above it raise (inputs) or keep the head and stop (webhook/upload replies)."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and not truncate:
        # We ask for identity; a compressed body would defeat the byte cap (and is not the media file).
        raise FetchError(f"response uses Content-Encoding {encoding!r}; identity required", kind="http")
    declared = resp.headers.get("content-length")
    if not truncate and declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise FetchError(f"response declares {int(declared)} bytes, limit {max_bytes}", kind="too_large")
    buf = bytearray()
    # A response a custom transport already read (e.g. httpx.MockTransport) is checked as a whole.
    chunks = _one_chunk(resp.content) if resp.is_stream_consumed else resp.aiter_raw()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > max_bytes:
            if truncate:
                return bytes(buf[:max_bytes])
            raise FetchError(f"response larger than {max_bytes} bytes", kind="too_large")
    return bytes(buf)


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _one_hop(
    client: httpx.AsyncClient,
    method: str,
    target: _Target,
    *,
    headers: Mapping[str, str] | None,
    content: Content,
    allow_loopback: bool,
    resolver: Resolver | None,
    max_response_bytes: int,
    truncate_response: bool = False,
) -> GuardedResponse:
    addrs = await resolve_checked(target, allow_loopback=allow_loopback, resolver=resolver)
    # Host header as the URL named it (IDNA form, brackets for IPv6 literals, port if explicit).
    host_header = f"[{target.host}]" if isinstance(target.literal, ipaddress.IPv6Address) else target.host
    if target.url.port is not None:
        host_header += f":{target.url.port}"
    for ip in addrs:
        pinned = target.url.copy_with(host=str(ip))
        hdrs = httpx.Headers(headers or {})
        hdrs["Host"] = host_header
        hdrs["Accept-Encoding"] = "identity"  # bodies are counted raw; no decompression bombs
        extensions = {}
        if target.url.scheme == "https" and target.literal is None:
            extensions["sni_hostname"] = target.host
        body = content() if callable(content) else content
        request = client.build_request(method, pinned, headers=hdrs, content=body, extensions=extensions)
        try:
            resp = await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError:
            continue  # nothing was sent; try the next checked address
        try:
            data = await _read_capped(resp, max_response_bytes, truncate_response)
        finally:
            await resp.aclose()
        return GuardedResponse(status=resp.status_code, headers=resp.headers, body=data, url=str(target.url))
    raise FetchError(f"cannot connect to {target.host}", kind="network")


@contextlib.contextmanager
def _transport_errors(deadline_message: str) -> Iterator[None]:
    """The overall deadline, httpx's per-step timeouts and broken connections, as :class:`FetchError`
    (``retryable``); policy refusals and our own ``FetchError`` pass through."""
    try:
        yield
    except TimeoutError:
        raise FetchError(deadline_message, kind="timeout") from None
    except httpx.TimeoutException:
        raise FetchError("timed out", kind="timeout") from None
    except httpx.HTTPError:
        raise FetchError("the connection failed before a complete response arrived", kind="network") from None


async def guarded_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: Content = None,
    allow_loopback: bool = False,
    deadline_s: float = 15.0,
    max_response_bytes: int = 64 * 1024,
    resolver: Resolver | None = None,
    client: httpx.AsyncClient | None = None,
) -> GuardedResponse:
    """One guarded request; redirects are **not** followed (a 3xx is returned as a response).

    For webhooks and uploads. The reply body is read up to ``max_response_bytes`` and the rest dropped
    (only its head matters there). ``deadline_s`` bounds everything, DNS included. Raises
    :class:`URLRefused` (policy; never retry) or :class:`FetchError` (``retryable`` for timeout/network).
    """
    target = check_url(url, allow_loopback=allow_loopback)
    own = client is None
    c = client or new_client(per_step_timeout_s=deadline_s)
    try:
        with _transport_errors(f"no complete response within {deadline_s:g} s"):
            async with asyncio.timeout(deadline_s):
                return await _one_hop(
                    c, method, target, headers=headers, content=content, allow_loopback=allow_loopback,
                    resolver=resolver, max_response_bytes=max_response_bytes, truncate_response=True,
                )
    finally:
        if own:
            await c.aclose()


async def get_following_redirects(
    url: str,
    *,
    max_bytes: int,
    deadline_s: float,
    allow_loopback: bool = False,
    resolver: Resolver | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> GuardedResponse:
    """GET with at most ``max_redirects`` redirects, each hop re-checked; 200 required.

    Raises :class:`URLRefused` or :class:`FetchError`.
    """
    target = check_url(url, allow_loopback=allow_loopback)
    with _transport_errors(f"not fetched within {deadline_s:g} s"):
        async with new_client(per_step_timeout_s=deadline_s) as client, asyncio.timeout(deadline_s):
            for _hop in range(max_redirects + 1):
                resp = await _one_hop(
                    client, "GET", target, headers={"Accept": "*/*"}, content=None,
                    allow_loopback=allow_loopback, resolver=resolver, max_response_bytes=max_bytes,
                )
                if resp.status in _REDIRECT_STATUSES:
                    location = resp.headers.get("location")
                    if not location:
                        raise FetchError(f"HTTP {resp.status} without Location", kind="http", status=resp.status)
                    try:
                        nxt = target.url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise URLRefused("redirect to a malformed URL") from None
                    target = check_url(nxt, allow_loopback=allow_loopback)
                    continue
                if resp.status != 200:
                    raise FetchError(f"HTTP {resp.status}", kind="http", status=resp.status)
                return resp
            raise FetchError(f"more than {max_redirects} redirects", kind="redirects")


async def fetch_bytes(
    url: str,
    *,
    parameter: str,
    max_bytes: int,
    deadline_s: float,
    allow_loopback: bool = False,
    resolver: Resolver | None = None,
) -> bytes:
    """Fetch a user-supplied input URL under every guard above; errors become Runware errors.

    Raises :class:`InvalidRequest` with one item naming ``parameter`` and code
    ``invalidInputUrl`` (refused by policy), ``inputTooLarge`` (byte cap) or ``inputFetchFailed``
    (network, timeout, non-200 status, too many redirects).
    """
    try:
        resp = await get_following_redirects(
            url, max_bytes=max_bytes, deadline_s=deadline_s, allow_loopback=allow_loopback, resolver=resolver
        )
    except URLRefused as e:
        raise _invalid("invalidInputUrl", f"URL refused: {e.reason}", parameter) from None
    except FetchError as e:
        code = "inputTooLarge" if e.kind == "too_large" else "inputFetchFailed"
        raise _invalid(code, f"could not fetch URL: {e.reason}", parameter) from None
    return resp.body


def validate_url(url: str, *, parameter: str, allow_loopback: bool = False, code: str = "invalidInputUrl") -> None:
    """Submit-time static check (scheme, userinfo, port, literal/numeric host) without DNS.

    Use for ``webhookURL``/``uploadEndpoint`` at request validation; the send-time request re-checks
    everything after resolution. Raises :class:`InvalidRequest` naming ``parameter``.
    """
    try:
        target = check_url(url, allow_loopback=allow_loopback)
        if target.literal is not None:
            why = address_refusal(target.literal, allow_loopback=allow_loopback)
            if why is not None:
                raise URLRefused(why)
    except URLRefused as e:
        raise _invalid(code, f"URL refused: {e.reason}", parameter) from None


def _invalid(code: str, message: str, parameter: str) -> InvalidRequest:
    return InvalidRequest(errors=[RunwareError(code=code, message=message, parameter=parameter)])

"""Standard Webhooks signing, verification and one-message delivery with retries.

Signing (Standard Webhooks 1.0): each POST carries

* ``webhook-id``: stable per message (e.g. ``msg_<taskUUID>_<event>``), identical on every retry, so
  receivers dedupe on it;
* ``webhook-timestamp``: unix seconds of *this attempt*;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``, recomputed on
  every attempt (the timestamp changes).

The secret is ``whsec_<base64 of the key>`` (what ``standardwebhooks.Webhook(secret)`` and Svix accept),
plain base64 of the key, or raw ``bytes``. :func:`wanflash.signing.generate_secret` makes one.

Verifying on the receiving side (users, and this project's tests)::

    from wanflash.delivery.webhook import verify, WebhookVerificationError
    try:
        verify(secret, request.headers, raw_body_bytes)      # tolerance 5 min
    except WebhookVerificationError:
        return 400
    # then dedupe on request.headers["webhook-id"]

``verify`` accepts any of several space-separated ``v1,`` signatures (secret rotation), compares in
constant time, and refuses timestamps more than ``tolerance_s`` away from now. Any standard library
(``standardwebhooks``, ``svix``) verifies these messages too.

Delivery (:class:`WebhookSender`, one :meth:`~WebhookSender.attempt` at a time, retried by the one
:class:`RetryPolicy` that the outbox applies too): POST the JSON body (serialised once, same bytes every attempt)
through the SSRF guard; redirects are not followed; each attempt has a total deadline (15 s);
2xx = delivered; 410 = stop (receiver gone); 408/425/429/5xx, timeouts and connection errors =
retry with exponential backoff and full jitter, honouring ``Retry-After`` (capped); 3xx and other 4xx
= stop (a retry would get the same answer); no attempt is started at or after ``expires_at``
(the output URL would be dead). ``deliver`` sends one message to completion in memory, sleeping
between attempts, or gives up and says why; the outbox (:mod:`wanflash.delivery.outbox`) makes one
:meth:`~WebhookSender.attempt` per lease and persists the same policy's next time instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..net.ssrf import FetchError, Resolver, URLRefused, guarded_request
from ..signing import SECRET_PREFIX

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429})


class WebhookVerificationError(Exception):
    """A webhook failed verification (missing header, bad signature, timestamp out of tolerance)."""


# ----------------------------------------------------------------------------------- signing




def secret_key(secret: bytes | str) -> bytes:
    """The HMAC key: raw bytes as given, or the base64 payload of a ``whsec_``/base64 string."""
    if isinstance(secret, bytes):
        if not secret:
            raise ValueError("empty webhook secret")
        return secret
    s = secret.strip()
    if s.startswith(SECRET_PREFIX):
        s = s[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret must be 'whsec_<base64>' or base64") from None
    if not key:
        raise ValueError("empty webhook secret")
    return key


def sign(secret: bytes | str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(secret: bytes | str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers plus ``content-type: application/json``."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: bytes | str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook; raise :class:`WebhookVerificationError` if it is not authentic/fresh."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts_raw = lower["webhook-timestamp"]
        sig_header = lower["webhook-signature"]
    except KeyError as e:
        raise WebhookVerificationError(f"missing header {e.args[0]}") from None
    try:
        ts = int(ts_raw)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp") from None
    current = time.time() if now is None else now
    if ts < current - tolerance_s:
        raise WebhookVerificationError("message timestamp too old")
    if ts > current + tolerance_s:
        raise WebhookVerificationError("message timestamp too new")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1].encode()
    for candidate in sig_header.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return
    raise WebhookVerificationError("no matching signature")


# ----------------------------------------------------------------------------------- delivery


#: :meth:`RetryPolicy.after_failure`'s answer: retry after this many seconds, or why to stop.
RetryDecision = float | Literal["exhausted", "expired"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a message again after a retryable failure; the one policy both the in-memory loop
    (:meth:`WebhookSender.deliver_body`) and the outbox (:class:`~wanflash.delivery.outbox.OutboxDeliverer`,
    which persists the answer) apply: exponential backoff with full jitter,
    delay_n = U(0, min(max_delay, base * 2**(n-1))), pushed back to the receiver's ``Retry-After``
    (capped at ``max_retry_after_s``); at most ``max_attempts`` attempts; no attempt at or after the
    message's ``expires_at``."""

    base_delay_s: float = 5.0
    max_delay_s: float = 600.0
    max_attempts: int = 10
    max_retry_after_s: float = 3600.0  # a receiver cannot park us for longer than this

    def delay(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))

    def after_failure(self, attempts: int, retry_after: float | None, *, now: float, expires_at: float,
                      rng: Callable[[], float] = random.random) -> RetryDecision:
        """After ``attempts`` attempts, the last a retryable failure at ``now``: the seconds to wait
        before the next, or why not to try again (``exhausted``: the attempt budget is spent;
        ``expired``: the next attempt would land at or after ``expires_at``)."""
        if attempts >= self.max_attempts:
            return "exhausted"
        delay = self.delay(attempts, rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        if now + delay >= expires_at:
            return "expired"
        return delay


DeliveryState = Literal["delivered", "gone", "rejected", "redirected", "refused", "expired", "exhausted"]
#: One attempt's outcome: a final state, or ``retry`` (408/425/429/5xx, timeout, connection error).
AttemptState = Literal["delivered", "gone", "rejected", "redirected", "refused", "retry"]


@dataclass(frozen=True)
class DeliveryOutcome:
    """How a delivery ended. ``delivered`` only for a 2xx; ``state`` says why otherwise."""

    state: DeliveryState
    attempts: int
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver's last answer asked for (429/503 Retry-After)

    @property
    def delivered(self) -> bool:
        return self.state == "delivered"


@dataclass(frozen=True)
class AttemptOutcome:
    """How one POST ended: ``retry`` for a failure worth retrying, else a final state."""

    state: AttemptState
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked for (429/503 Retry-After)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class WebhookSender:
    """Deliver one signed message with retries. Clock, sleep and randomness are injectable for tests."""

    def __init__(
        self,
        secret: bytes | str,
        *,
        allow_loopback: bool = False,
        schedule: RetryPolicy | None = None,
        attempt_timeout_s: float = 15.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        resolver: Resolver | None = None,
    ) -> None:
        secret_key(secret)  # fail at construction on a malformed secret, not at the first send
        self.secret = secret
        self.allow_loopback = allow_loopback
        self.schedule = schedule or RetryPolicy()
        self.attempt_timeout_s = attempt_timeout_s
        self.sleep = sleep
        self.clock = clock
        self.rng = rng
        self.resolver = resolver

    @staticmethod
    def encode(payload: Mapping[str, Any]) -> bytes:
        """The body bytes for a payload (compact JSON, UTF-8). Store these in an outbox, not the dict."""
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    async def deliver(
        self, url: str, payload: Mapping[str, Any], *, msg_id: str, expires_at: float
    ) -> DeliveryOutcome:
        """POST ``payload`` as JSON; see :meth:`deliver_body`."""
        return await self.deliver_body(url, self.encode(payload), msg_id=msg_id, expires_at=expires_at)

    async def attempt(self, url: str, body: bytes, *, msg_id: str, expires_at: float) -> AttemptOutcome:
        """One signed POST of ``body`` (the caller checked ``expires_at`` is ahead), classified."""
        now = self.clock()
        try:
            resp = await guarded_request(
                "POST", url, headers=signed_headers(self.secret, msg_id, int(now), body), content=body,
                allow_loopback=self.allow_loopback,
                deadline_s=max(0.001, min(self.attempt_timeout_s, expires_at - now)),
                resolver=self.resolver,
            )
        except URLRefused as e:
            log.warning("webhook %s refused by SSRF policy: %s", msg_id, e.reason)
            return AttemptOutcome("refused", None, e.reason)
        except FetchError as e:
            return AttemptOutcome("retry" if e.retryable else "rejected", None, e.reason)
        if 200 <= resp.status < 300:
            return AttemptOutcome("delivered", resp.status)
        if resp.status == 410:
            return AttemptOutcome("gone", resp.status, "receiver answered 410 Gone")
        if 300 <= resp.status < 400:
            return AttemptOutcome("redirected", resp.status, "redirects are not followed")
        if resp.status < 500 and resp.status not in RETRYABLE_STATUSES:
            return AttemptOutcome("rejected", resp.status, f"HTTP {resp.status}")
        return AttemptOutcome("retry", resp.status, f"HTTP {resp.status}",
                              parse_retry_after(resp.headers.get("retry-after"), self.clock()))

    async def deliver_body(self, url: str, body: bytes, *, msg_id: str, expires_at: float) -> DeliveryOutcome:
        """POST ``body`` until a final answer, ``max_attempts`` or ``expires_at`` (unix seconds): each
        :meth:`attempt`, then the :class:`RetryPolicy` (sleeping here, instead of persisting the time)."""
        attempts = 0
        last = AttemptOutcome("retry")
        while True:
            if self.clock() >= expires_at:
                return DeliveryOutcome("expired", attempts, last.status, last.error)
            attempts += 1
            last = await self.attempt(url, body, msg_id=msg_id, expires_at=expires_at)
            if last.state != "retry":
                return DeliveryOutcome(last.state, attempts, last.status, last.error)
            log.info("webhook %s attempt %d failed: %s", msg_id, attempts, last.error)
            wait = self.schedule.after_failure(attempts, last.retry_after, now=self.clock(),
                                               expires_at=expires_at, rng=self.rng)
            if isinstance(wait, str):
                retry_after = last.retry_after if wait == "exhausted" else None
                return DeliveryOutcome(wait, attempts, last.status, last.error, retry_after)
            await self.sleep(wait)

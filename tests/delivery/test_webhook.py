"""Webhook signing/verification and delivery against scripted loopback receivers."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.net.test_ssrf import LoopbackServer, Req, respond
from wanflash.delivery.webhook import (
    RetryPolicy,
    WebhookSender,
    WebhookVerificationError,
    parse_retry_after,
    sign,
    signed_headers,
    verify,
)
from wanflash.signing import generate_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# ----------------------------------------------------------------------------- signing


def test_sign_matches_standard_webhooks_vector() -> None:
    # Published example of the Standard Webhooks / Svix libraries.
    body = b'{"test": 2432232314}'
    assert sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_secret_forms_agree() -> None:
    import base64

    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert sign(key, "m", 1, b"x") == sign(SECRET, "m", 1, b"x") == sign(SECRET[6:], "m", 1, b"x")
    with pytest.raises(ValueError):
        sign("whsec_not base64!!", "m", 1, b"x")
    assert generate_secret().startswith("whsec_")


def test_verify_valid_tampered_old_future_rotated() -> None:
    now = 1_700_000_000
    body = b'{"taskUUID":"t"}'
    h = signed_headers(SECRET, "msg_1", now, body)
    verify(SECRET, h, body, now=now + 10)
    verify(SECRET, {k.upper(): v for k, v in h.items()}, body, now=now)  # header names case-insensitive
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, h, body + b" ", now=now)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, {**h, "webhook-id": "msg_2"}, body, now=now)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(generate_secret(), h, body, now=now)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(SECRET, h, body, now=now + 301)
    with pytest.raises(WebhookVerificationError, match="new"):
        verify(SECRET, h, body, now=now - 301)
    # Timestamp is covered by the signature: moving it into the window breaks the signature.
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, {**h, "webhook-timestamp": str(now + 400)}, body, now=now + 400)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(SECRET, {"webhook-id": "x"}, body, now=now)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, {**h, "webhook-signature": "garbage-without-comma"}, body, now=now)
    rotated = {**h, "webhook-signature": sign(generate_secret(), "msg_1", now, body) + " " + h["webhook-signature"]}
    verify(SECRET, rotated, body, now=now)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7", 0) == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470) == pytest.approx(10)
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


def test_backoff_is_exponential_with_full_jitter() -> None:
    s = RetryPolicy(base_delay_s=2, max_delay_s=30)
    assert [s.delay(n, lambda: 1.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert s.delay(3, lambda: 0.25) == 2


def test_retry_policy_decides_backoff_retry_after_budget_and_expiry() -> None:
    p = RetryPolicy(base_delay_s=5, max_attempts=3, max_retry_after_s=600)
    def one() -> float:
        return 1.0

    assert p.after_failure(1, None, now=0, expires_at=1000, rng=one) == 5
    assert p.after_failure(2, None, now=0, expires_at=1000, rng=one) == 10
    assert p.after_failure(1, 120, now=0, expires_at=1000, rng=one) == 120  # Retry-After wins
    assert p.after_failure(1, 99999, now=0, expires_at=1000, rng=one) == 600  # capped
    assert p.after_failure(1, 2, now=0, expires_at=1000, rng=one) == 5  # never sooner than backoff
    assert p.after_failure(3, None, now=0, expires_at=1000, rng=one) == "exhausted"
    assert p.after_failure(2, None, now=990, expires_at=1000, rng=one) == "expired"  # lands at 1000


# ----------------------------------------------------------------------------- delivery


class FakeTime:
    """Clock + sleep: sleeps advance the clock instantly and are recorded."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def sender(ft: FakeTime, **kw: object) -> WebhookSender:
    schedule = kw.pop("schedule", RetryPolicy(base_delay_s=5, max_attempts=5))
    return WebhookSender(SECRET, allow_loopback=True, schedule=schedule, sleep=ft.sleep, clock=ft.clock,
                         rng=lambda: 1.0, **kw)  # type: ignore[arg-type]


def scripted(*statuses: int, headers: dict[str, str] | None = None):
    it = iter(statuses)

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await respond(w, next(it, 200), b"ok", headers)

    return h


async def test_500_three_times_then_200() -> None:
    ft = FakeTime()
    async with LoopbackServer(scripted(500, 502, 503, 200)) as srv:
        out = await sender(ft).deliver(srv.url("/hook"), {"taskUUID": "t1", "n": 1}, msg_id="msg_t1",
                                       expires_at=ft.now + 3600)
    assert out.delivered and out.attempts == 4 and out.status == 200
    assert ft.sleeps == [5, 10, 20]
    reqs = srv.requests
    assert {r.headers["webhook-id"] for r in reqs} == {"msg_t1"}
    stamps = [int(r.headers["webhook-timestamp"]) for r in reqs]
    assert len(set(stamps)) == 4  # fresh timestamp per attempt (fake clock moved 5, 10, 20 s)
    assert len({r.headers["webhook-signature"] for r in reqs}) == 4
    for r, ts in zip(reqs, stamps):
        verify(SECRET, r.headers, r.body, now=ts)
        assert json.loads(r.body) == {"taskUUID": "t1", "n": 1}
        assert r.method == "POST" and r.headers["content-type"] == "application/json"
    assert len({r.body for r in reqs}) == 1


async def test_hanging_receiver_times_out_per_attempt() -> None:
    ft = FakeTime()

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with LoopbackServer(h) as srv:
        t0 = time.monotonic()
        out = await sender(ft, attempt_timeout_s=0.3, schedule=RetryPolicy(base_delay_s=1, max_attempts=2)).deliver(
            srv.url(), {"a": 1}, msg_id="m", expires_at=ft.now + 3600
        )
        elapsed = time.monotonic() - t0
    assert out.state == "exhausted" and out.attempts == 2 and "0.3 s" in (out.error or "")
    assert elapsed < 2 and len(srv.requests) == 2


async def test_302_not_followed_and_not_retried() -> None:
    ft = FakeTime()

    async def h(req: Req, w: asyncio.StreamWriter) -> None:
        if req.path == "/hook":
            await respond(w, 302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
        else:
            await respond(w, 200)

    async with LoopbackServer(h) as srv:
        out = await sender(ft).deliver(srv.url("/hook"), {"a": 1}, msg_id="m", expires_at=ft.now + 3600)
    assert out.state == "redirected" and out.status == 302 and out.attempts == 1
    assert [r.path for r in srv.requests] == ["/hook"] and ft.sleeps == []


async def test_410_stops() -> None:
    ft = FakeTime()
    async with LoopbackServer(scripted(410, 200)) as srv:
        out = await sender(ft).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=ft.now + 3600)
    assert out.state == "gone" and out.attempts == 1 and len(srv.requests) == 1


async def test_other_4xx_stops_but_429_retries_with_retry_after() -> None:
    ft = FakeTime()
    async with LoopbackServer(scripted(400)) as srv:
        out = await sender(ft).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=ft.now + 3600)
    assert out.state == "rejected" and out.status == 400 and len(srv.requests) == 1

    ft = FakeTime()
    async with LoopbackServer(scripted(429, 200, headers={"retry-after": "120"})) as srv:
        out = await sender(ft).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=ft.now + 3600)
    assert out.delivered and out.attempts == 2 and ft.sleeps == [120]


async def test_no_attempt_after_expiry() -> None:
    ft = FakeTime()
    async with LoopbackServer(scripted(500, 500, 500, 500, 500)) as srv:
        # delays 5, 10, 20: attempts at +0, +5, +15; the one at +35 would be past expiry (+30).
        out = await sender(ft).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=ft.now + 30)
        assert out.state == "expired" and out.attempts == 3 and len(srv.requests) == 3
        stamps = [int(r.headers["webhook-timestamp"]) for r in srv.requests]
        assert max(stamps) < ft.now + 30

        ft2 = FakeTime()
        out = await sender(ft2).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=ft2.now - 1)
        assert out.state == "expired" and out.attempts == 0 and len(srv.requests) == 3


async def test_connection_refused_is_retried() -> None:
    ft = FakeTime()
    async with LoopbackServer(scripted()) as srv:
        port = srv.port
    out = await sender(ft, schedule=RetryPolicy(base_delay_s=1, max_attempts=3)).deliver(
        f"http://127.0.0.1:{port}/", {"a": 1}, msg_id="m", expires_at=ft.now + 3600
    )
    assert out.state == "exhausted" and out.attempts == 3 and ft.sleeps == [1, 2]


async def test_loopback_refused_by_default_before_any_byte() -> None:
    async with LoopbackServer(scripted()) as srv:
        out = await WebhookSender(SECRET).deliver(srv.url(), {"a": 1}, msg_id="m", expires_at=time.time() + 60)
        await asyncio.sleep(0.05)
    assert out.state == "refused" and out.attempts == 1 and srv.connections == 0

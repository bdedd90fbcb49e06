"""Webhooks through a transactional outbox: what to send at a terminal state, and the loop that sends it.

Guarantees:

* :func:`make_renderer` turns a terminal task into its webhook messages. The store calls it inside
  the transaction that records the terminal state, so the messages exist exactly when the state
  does (a crash between "done" and "POST" loses nothing; a stale attempt queues nothing).
* Body: **one flat JSON object per result**, the same item ``getResponse`` returns for that result
  (``taskType``, ``taskUUID``, ``status: "success"``, ``videoUUID``, signed ``videoURL``, ``seed``,
  ``cost`` when asked), because Runware's docs say "each completed item triggers a separate webhook
  call" and its webhook examples are single result objects, not ``{"data": [...]}`` envelopes. The
  results of one task complete together here, so N messages are queued at once. A failed or
  cancelled task sends one message: the error item ``getResponse`` returns plus ``status: "error"``.
  Links are built on ``WANFLASH_PUBLIC_URL`` (else http://host:port), since no request is in context.
* ``webhook-id`` is ``msg_<taskUUID>_<i>`` (``_error`` for failures), stored in the row: identical
  on every retry and after restarts, so receivers dedupe on it. Body bytes are stored, not rebuilt.
* :class:`OutboxDeliverer` leases due rows, makes **one** signed attempt per lease with
  :meth:`WebhookSender.attempt <wanflash.delivery.webhook.WebhookSender.attempt>` (SSRF-guarded,
  3xx not followed, 410 stops), and persists the outcome; retryable failures are rescheduled by the
  sender's :class:`~wanflash.delivery.webhook.RetryPolicy` (the one ``WebhookSender.deliver`` uses:
  exponential backoff and full jitter, or later when a 429/503 carries ``Retry-After``, capped at
  ``max_retry_after_s``); the next time lives in the row, so it survives restarts. Nothing is attempted at or after
  the message's ``expires_at`` (the output URL's expiry): the row ends ``expired``.
* Every attempt's outcome is counted on ``metrics`` (``delivered``, ``retry`` when rescheduled, or
  the final state) and logged with the message's ``taskUUID``.
* The signing secret is ``WANFLASH_WEBHOOK_SECRET``, else one generated once and kept in
  ``<data_dir>/webhook_secret`` (mode 0600), like the URL-signing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from wanflash.delivery.background import BackgroundLoop
from wanflash.delivery.responses import expires_at, poll_reply
from wanflash.delivery.webhook import WebhookSender
from wanflash.jobs.model import TaskState
from wanflash.jobs.source import Outbox, OutboxMessage, TaskRecord
from wanflash.observability.logs import redact_url, task_context

if TYPE_CHECKING:
    from wanflash.observability.metrics import Metrics

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # longer than one attempt's 15 s deadline: a live loop never loses its lease


def make_renderer(sign_url: Callable[[str, float], str],
                  default_ttl: int) -> Callable[[TaskRecord], list[OutboxMessage]]:
    """The store's outbox renderer: one message per result (or one error message)."""

    def render(record: TaskRecord) -> list[OutboxMessage]:
        url = record.spec.webhook_url
        if not url:
            return []
        exp = expires_at(record, default_ttl)
        reply = poll_reply(record, sign_url, default_ttl=default_ttl)
        tu = record.task_uuid
        if record.state is TaskState.SUCCEEDED:
            return [OutboxMessage(f"msg_{tu}_{i}", url, WebhookSender.encode(item), exp)
                    for i, item in enumerate(reply.data)]
        return [OutboxMessage(f"msg_{tu}_error", url, WebhookSender.encode({**e, "status": "error"}), exp)
                for e in reply.errors[:1]]

    return render


class OutboxDeliverer(BackgroundLoop):
    """The delivery loop: an asyncio task next to the supervisor."""

    task_name = "wanflash-webhooks"

    def __init__(self, store: Outbox, sender: WebhookSender, *, poll_seconds: float = 0.5,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        # One sender.attempt per lease; sender.schedule (the RetryPolicy WebhookSender.deliver applies
        # too) says when the next one is due, and that time is persisted in the row.
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.wake = asyncio.Event()

    async def _loop(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook outbox pass failed")
                sent = 0
            if not sent:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds)

    async def run_once(self) -> int:
        """Lease and attempt every due message once; returns how many were attempted."""
        rows = await asyncio.to_thread(self.store.lease_outbox, LEASE_SECONDS)
        await asyncio.gather(*(self._attempt(m) for m in rows))
        return len(rows)

    async def _attempt(self, m: OutboxMessage) -> None:
        with task_context(m.task_uuid):
            await self._attempt_in_context(m)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook(outcome)

    async def _attempt_in_context(self, m: OutboxMessage) -> None:
        if self.sender.clock() >= m.expires_at:
            self._count("expired")
            await asyncio.to_thread(self.store.outbox_result, m.msg_id, state="expired", attempts=m.attempts,
                                    error="the output URL expired before delivery")
            return
        out = await self.sender.attempt(m.url, m.body, msg_id=m.msg_id, expires_at=m.expires_at)
        attempts = m.attempts + 1
        state: str = out.state
        next_at: float | None = None
        if out.state == "retry":
            now = self.sender.clock()
            wait = self.sender.schedule.after_failure(attempts, out.retry_after, now=now, expires_at=m.expires_at,
                                                      rng=self.sender.rng)
            state, next_at = (wait, None) if isinstance(wait, str) else ("pending", now + wait)
        self._count("retry" if state == "pending" else state)
        if state != "delivered":
            log.warning("webhook %s to %s: %s after %d attempts (%s)", m.msg_id, redact_url(m.url), state, attempts,
                        out.error)
        await asyncio.to_thread(self.store.outbox_result, m.msg_id, state=state, attempts=attempts, next_at=next_at,
                                status=out.status, error=out.error)



"""The webhook outbox: written with the terminal state, fenced by attempt, delivered after a crash
with the same ``webhook-id``, retried on 5xx, one signed flat POST per result end to end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx

from tests.api.support import API_KEY, FAKE, make_settings
from tests.api.test_ws_protocol import video_task
from tests.delivery.receiver import receiver
from tests.jobs.records import output
from wanflash.delivery.outbox import OutboxDeliverer, make_renderer
from wanflash.delivery.webhook import RetryPolicy, WebhookSender, verify
from wanflash.jobs.model import JobSpec, OutputRecord
from wanflash.jobs.store import SqliteJobSource
from wanflash.signing import generate_secret
from wanflash.testing import live_server

SECRET = generate_secret()


def spec(url: str, n: int = 2) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model="alibaba:wan@2.6-flash", profile="tiny", positive_prompt="p",
                   width=128, height=72, resolution_class="720p", duration=1, fps=8, num_frames=8,
                   seeds=list(range(1, n + 1)), number_results=n, cost=0.1, webhook_url=url)


def open_store(path: Path) -> SqliteJobSource:
    return SqliteJobSource(path, outbox=make_renderer(lambda k, e: f"http://h/media/{k}?exp={int(e)}", 3600),
                           max_attempts=2)


def results(n: int) -> list[OutputRecord]:
    return [output(str(uuid.uuid4()), seed=i + 1, key=f"outputs/x/{i}.mp4") for i in range(n)]


def test_outbox_rows_are_written_with_the_transition_and_fenced(tmp_path: Path) -> None:
    store = open_store(tmp_path / "db")
    s = spec("http://127.0.0.1:9/hook")
    store.insert(s, now=0)
    assert store.claim("a", 30, now=1).attempt == 1  # type: ignore[union-attr]
    assert store.claim("b", 30, now=40).attempt == 2  # type: ignore[union-attr]
    assert not store.complete(s.task_uuid, 1, results(2))  # the zombie first attempt
    assert store.outbox_rows() == []
    assert store.complete(s.task_uuid, 2, results(2), now=50)
    rows = store.outbox_rows(s.task_uuid)
    assert [r["msg_id"] for r in rows] == [f"msg_{s.task_uuid}_0", f"msg_{s.task_uuid}_1"]
    bodies = [json.loads(r["body"]) for r in rows]
    assert [b["seed"] for b in bodies] == [1, 2] and all(b["status"] == "success" for b in bodies)
    assert all(r["expires_at"] == 50 + 3600 for r in rows)
    # A failure queues one error message; a task without webhookURL queues none.
    f = spec("http://127.0.0.1:9/hook")
    store.insert(f)
    c = store.claim("c", 30)
    assert c and store.fail(f.task_uuid, c.attempt, "inferenceError", "boom")
    (row,) = store.outbox_rows(f.task_uuid)
    assert json.loads(row["body"]) == {"code": "inferenceError", "message": "boom", "taskType": "videoInference",
                                       "taskUUID": f.task_uuid, "status": "error"}
    store.close()


async def test_crash_before_post_is_delivered_after_restart_with_same_id(tmp_path: Path) -> None:
    with receiver() as rx:
        rx.statuses = [503]  # first attempt fails: retried with the same webhook-id
        store = open_store(tmp_path / "db")
        s = spec(rx.url + "/hook")
        store.insert(s)
        c = store.claim("a", 30)
        assert c and store.complete(s.task_uuid, c.attempt, results(2))
        store.close()  # the process "dies" after the commit, before any POST

        store = open_store(tmp_path / "db")
        d = OutboxDeliverer(store, WebhookSender(SECRET, allow_loopback=True, schedule=RetryPolicy(base_delay_s=0.05),
                                                 rng=lambda: 1.0))
        for _ in range(100):
            await d.run_once()
            if all(r["state"] == "delivered" for r in store.outbox_rows()):
                break
            await asyncio.sleep(0.05)
        rows = store.outbox_rows()
        assert [r["state"] for r in rows] == ["delivered", "delivered"]
        ids = [r.headers["webhook-id"] for r in rx.requests]
        assert sorted(ids) == sorted([f"msg_{s.task_uuid}_0", f"msg_{s.task_uuid}_1"] + [ids[0]])
        assert sum(r["attempts"] for r in rows) == 3
        for r in rx.requests:
            verify(SECRET, r.headers, r.body)
        store.close()


async def test_retry_after_pushes_the_next_attempt_back(tmp_path: Path) -> None:
    with receiver() as rx:
        rx.statuses = [429, 503]
        rx.headers = [{"retry-after": "120"}, {"retry-after": "999999"}]
        store = open_store(tmp_path / "db")
        s = spec(rx.url + "/hook", n=1)
        store.insert(s)
        c = store.claim("a", 30)
        assert c and store.complete(s.task_uuid, c.attempt, results(1))
        schedule = RetryPolicy(base_delay_s=0.05, max_retry_after_s=600)
        d = OutboxDeliverer(store, WebhookSender(SECRET, allow_loopback=True, schedule=schedule, rng=lambda: 1.0))
        t0 = time.time()
        assert await d.run_once() == 1
        (row,) = store.outbox_rows()
        # Backoff alone would retry after 0.05 s; the receiver asked for 120 s.
        assert row["state"] == "pending" and row["last_status"] == 429
        assert 120 <= row["next_at"] - t0 < 125
        assert await d.run_once() == 0  # not due yet
        store._write("UPDATE outbox SET next_at=0")  # time passes
        assert await d.run_once() == 1
        (row,) = store.outbox_rows()
        assert row["last_status"] == 503 and 600 <= row["next_at"] - t0 < 605  # capped at max_retry_after_s
        store._write("UPDATE outbox SET next_at=0")
        assert await d.run_once() == 1
        assert store.outbox_rows()[0]["state"] == "delivered" and len(rx.requests) == 3
        store.close()


async def test_the_outbox_runs_the_senders_retry_policy(tmp_path: Path) -> None:
    """Production (one attempt per lease, the next time persisted) follows the same RetryPolicy that
    WebhookSender.deliver applies in memory: same delays, same attempt budget, same final state."""
    policy = RetryPolicy(base_delay_s=5, max_attempts=3)
    with receiver() as rx:
        rx.statuses = [500, 502, 503]
        store = open_store(tmp_path / "db")
        s = spec(rx.url + "/hook", n=1)
        store.insert(s)
        c = store.claim("a", 30)
        assert c and store.complete(s.task_uuid, c.attempt, results(1))
        d = OutboxDeliverer(store, WebhookSender(SECRET, allow_loopback=True, schedule=policy, rng=lambda: 1.0))
        waits = []
        for _ in range(3):
            t0 = time.time()
            assert await d.run_once() == 1
            (row,) = store.outbox_rows()
            if row["state"] == "pending":
                waits.append(round(row["next_at"] - t0))
                store._write("UPDATE outbox SET next_at=0")  # time passes
        assert waits == [5, 10]
        assert row["state"] == "exhausted" and row["attempts"] == 3 and row["last_status"] == 503
        assert len(rx.requests) == 3 and await d.run_once() == 0
        store.close()


async def test_expired_message_is_not_sent(tmp_path: Path) -> None:
    with receiver() as rx:
        store = open_store(tmp_path / "db")
        s = spec(rx.url + "/hook", n=1)
        store.insert(s)
        c = store.claim("a", 30)
        assert c and store.complete(s.task_uuid, c.attempt, results(1), now=time.time() - 7200)  # URL expired
        await OutboxDeliverer(store, WebhookSender(SECRET, allow_loopback=True)).run_once()
        assert rx.requests == [] and store.outbox_rows()[0]["state"] == "expired"
        store.close()


async def test_live_service_posts_one_signed_flat_item_per_result(tmp_path: Path) -> None:
    with receiver() as rx:
        settings = make_settings(tmp_path / "d", webhook_secret=SECRET)
        with live_server(settings, pipeline_factory=FAKE) as srv:
            t = video_task(numberResults=2, webhookURL=rx.url + "/hook")
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=20,
                                         headers={"Authorization": f"Bearer {API_KEY}"}) as http:
                assert (await http.post("/v1", json=[t])).status_code == 200
                for _ in range(400):
                    if len(rx.requests) >= 2:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # nothing more may arrive
                poll = (await http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": t["taskUUID"]}])).json()
        assert len(rx.requests) == 2
        bodies = sorted((json.loads(r.body) for r in rx.requests), key=lambda b: b["seed"])
        for r in rx.requests:
            verify(SECRET, r.headers, r.body)
        assert {b["videoUUID"] for b in bodies} == {i["videoUUID"] for i in poll["data"]}
        assert all(b["taskUUID"] == t["taskUUID"] and b["status"] == "success" for b in bodies)

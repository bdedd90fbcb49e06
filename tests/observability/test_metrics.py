"""``/metrics``: queue depth, tasks by state, stage histograms, webhook outcomes, GPU memory, auth."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import make_settings
from tests.delivery.receiver import receiver
from tests.observability.pipelines import GPU_STATS
from tests.observability.support import submit, wait_done
from wanflash.observability.metrics import STAGES, StageClock
from wanflash.testing import LiveServer, live_server


def scrape(server: LiveServer, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(server.http_url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_stage_clock_splits_a_run_into_stages() -> None:
    now = [0.0]
    seen: list[tuple[str, float]] = []
    clock = StageClock(lambda stage, s: seen.append((stage, s)), clock=lambda: now[0])
    clock.begin("denoise")
    for step, t in ((1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)):
        now[0] = t
        clock.progress(step, 4, "denoise")  # the last step opens "decode"
    now[0] = 6.5
    clock.progress(0, 2, "encode")
    now[0] = 7.0
    clock.progress(1, 2, "encode")
    now[0] = 8.0
    clock.begin("upload")
    now[0] = 8.25
    clock.finish()
    assert seen == [("denoise", 4.0), ("decode", 2.5), ("encode", 1.5), ("upload", 0.25)]


def test_metrics_after_a_task_through_the_subprocess_executor(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", executor="subprocess")
    with receiver() as rx, live_server(settings, pipeline_factory="tests.observability.pipelines:gpu_reporting") as s:
        before = scrape(s)
        assert before[("wanflash_queue_depth", ())] == 0
        assert ("wanflash_gpu_memory_bytes", (("device", "cuda:0"), ("kind", "allocated"))) not in before

        tu = submit(s, webhookURL=rx.url + "/hook")
        body = wait_done(s, tu)
        assert body["data"][0]["status"] == "success"
        deadline = time.monotonic() + 10
        while not rx.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the outcome is counted right after the POST returns
            m = scrape(s)
            if m[("wanflash_webhook_deliveries_total", (("outcome", "delivered"),))] == 1:
                break
            time.sleep(0.05)

    assert m[("wanflash_queue_depth", ())] == 0
    assert m[("wanflash_tasks", (("state", "succeeded"),))] == 1
    assert m[("wanflash_tasks", (("state", "queued"),))] == 0
    assert m[("wanflash_executor_state", (("state", "ready"),))] == 1
    for stage in STAGES:  # one observation each: the model loaded once, one task ran every stage
        assert m[("wanflash_stage_duration_seconds_count", (("stage", stage),))] == 1, stage
        assert m[("wanflash_stage_duration_seconds_sum", (("stage", stage),))] >= 0
    assert m[("wanflash_stage_duration_seconds_sum", (("stage", "queue_wait"),))] < 60  # since submit, not the epoch
    # The denoise stage of the fast fake is tiny; encoding 32 frames at 960x960 is not.
    assert m[("wanflash_stage_duration_seconds_sum", (("stage", "encode"),))] > 0.01
    assert m[("wanflash_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    assert m[("wanflash_webhook_deliveries_total", (("outcome", "retry"),))] == 0
    for kind in ("allocated", "reserved", "peak_allocated", "device_used", "device_total"):
        assert m[("wanflash_gpu_memory_bytes", (("device", "cuda:0"), ("kind", kind)))] == GPU_STATS[kind]


def test_webhook_retry_is_counted_and_metrics_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", metrics_token="s3cret")
    with receiver() as rx, live_server(settings, pipeline_factory="tests.sdk.fast_pipeline:factory") as s:
        rx.statuses = [503]  # first attempt fails and is rescheduled
        assert httpx.get(s.http_url + "/metrics").status_code == 401
        assert httpx.get(s.http_url + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        wait_done(s, submit(s, webhookURL=rx.url + "/hook"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = scrape(s, Authorization="Bearer s3cret")
            if m[("wanflash_webhook_deliveries_total", (("outcome", "retry"),))] == 1:
                break
            time.sleep(0.05)
    assert m[("wanflash_webhook_deliveries_total", (("outcome", "retry"),))] == 1
    assert m[("wanflash_webhook_deliveries_total", (("outcome", "delivered"),))] == 0  # next try is seconds away
    # No GPU report from this pipeline: no GPU series at all.
    assert not any(name == "wanflash_gpu_memory_bytes" for name, _ in m)


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "data", metrics=False),
                     pipeline_factory="tests.sdk.fast_pipeline:factory") as s:
        assert httpx.get(s.http_url + "/metrics").status_code == 404


def test_queue_depth_counts_waiting_tasks(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "data"), pipeline_factory="tests.api.playground_pipeline:factory") as s:
        for _ in range(3):
            submit(s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = scrape(s)
            if m[("wanflash_tasks", (("state", "running"),))] == 1:
                break
            time.sleep(0.05)
        assert m[("wanflash_tasks", (("state", "running"),))] == 1
        assert m[("wanflash_queue_depth", ())] == 2
        assert m[("wanflash_tasks", (("state", "queued"),))] == 2

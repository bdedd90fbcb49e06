"""Prometheus metrics for one service instance, served at ``/metrics``.

Each :class:`Metrics` has its own registry (several apps can live in one process, as in the
tests). What is measured, and where:

* ``wanflash_queue_depth`` and ``wanflash_tasks{state}``: read from the task store at scrape
  time, so they are right whichever process changed the rows.
* ``wanflash_stage_duration_seconds{stage}``: a histogram per stage of a task, observed by the
  supervisor (:class:`StageClock`) from the events it already receives: ``queue_wait`` (created
  to claimed), ``load`` (the executor's model load), ``denoise`` (job start to the last denoising
  step; includes text encoding, promptExtend and, for chained clips, the earlier clips' decode),
  ``decode`` (last denoising step to the first encoded frame: VAE decode, resize, input audio),
  ``encode`` (PyAV encoding of every result) and ``upload`` (probing and storing the outputs,
  plus the ``uploadEndpoint`` PUT when asked).
* ``wanflash_webhook_deliveries_total{outcome}``: one count per delivery attempt of the outbox
  (``delivered``, ``retry``, or the final ``exhausted``/``expired``/``gone``/``rejected``/...).
* ``wanflash_gpu_memory_bytes{device,kind}``: the CUDA memory the executor reported after its
  last job (``allocated``, ``reserved``, ``peak_allocated`` in that job, ``device_used``,
  ``device_total``). Absent on machines without a GPU.
* ``wanflash_executor_state{state}``: 1 for the executor's current state.
* ``wanflash_media_deleted_tasks_total``, ``wanflash_uploads_deleted_total``: what the media
  sweeper deleted (:mod:`wanflash.delivery.retention`).

``wanflash worker`` processes have no web app: :func:`serve_metrics` exposes a worker's registry
(stages, GPU memory, executor state; the queue is the API's to report) on a port of its own.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wanflash.jobs.model import TaskState

if TYPE_CHECKING:
    from wanflash.jobs.source import Submissions

STAGES = ("queue_wait", "load", "denoise", "decode", "encode", "upload")
# Seconds: from a fast fake pipeline's milliseconds to a long A14B render.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
WEBHOOK_OUTCOMES = ("delivered", "retry", "exhausted", "expired", "gone", "rejected", "redirected", "refused")
GPU_KINDS = ("allocated", "reserved", "peak_allocated", "device_used", "device_total")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _StoreCollector(Collector):
    """Queue depth, tasks by state and executor state, computed when scraped."""

    def __init__(self, store: Submissions | None, executor_state: Callable[[], str] | None) -> None:
        self.store = store
        self.executor_state = executor_state

    def collect(self) -> Iterable[Metric]:
        if self.store is not None:
            counts = self.store.counts()
            yield GaugeMetricFamily("wanflash_queue_depth", "Tasks queued and not yet claimed by a worker.",
                                    value=counts.get(TaskState.QUEUED.value, 0))
            by_state = GaugeMetricFamily("wanflash_tasks", "Tasks in the task store, by state.", labels=["state"])
            for state in TaskState:
                by_state.add_metric([state.value], counts.get(state.value, 0))
            yield by_state
        if self.executor_state is not None:
            current = self.executor_state()
            ex = GaugeMetricFamily("wanflash_executor_state", "1 for the executor's current state.",
                                   labels=["state"])
            for s in sorted({"stopped", "loading", "ready", "failed", "dead", current}):
                ex.add_metric([s], 1.0 if s == current else 0.0)
            yield ex


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "wanflash_stage_duration_seconds", "Seconds spent in each stage of a task.", ["stage"],
            buckets=BUCKETS, registry=self.registry)
        self.webhooks = Counter(
            "wanflash_webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"],
            registry=self.registry)
        self.media_deleted = Counter(
            "wanflash_media_deleted_tasks", "Finished tasks whose stored inputs and outputs were deleted "
            "after their links expired.", registry=self.registry)
        self.uploads_deleted = Counter(
            "wanflash_uploads_deleted", "imageUpload/mediaStorage objects deleted after a period without use.",
            registry=self.registry)
        self.gpu_memory = Gauge(
            "wanflash_gpu_memory_bytes", "CUDA memory reported by the executor after its last job.",
            ["device", "kind"], registry=self.registry)
        for stage in STAGES:  # every series exists from the start, at zero
            self.stage_seconds.labels(stage)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)

    def watch_store(self, store: Submissions | None, executor_state: Callable[[], str] | None = None) -> None:
        """Report the store's queue and task counts (``None``: not this process's to report) and the
        executor's state, read at scrape time."""
        self.registry.register(_StoreCollector(store, executor_state))

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(max(0.0, seconds))

    def webhook(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()

    def gpu(self, stats: Mapping[str, object]) -> None:
        """Record ``{"device": "cuda:0", "allocated": n, ...}`` (what ``memory_stats()`` returns)."""
        device = str(stats.get("device", "cuda"))
        for kind in GPU_KINDS:
            value = stats.get(kind)
            if isinstance(value, (int, float)):
                self.gpu_memory.labels(device, kind).set(value)

    def render(self) -> bytes:
        """The text exposition format (reads the store: call it off the event loop)."""
        return generate_latest(self.registry)


class StageClock:
    """Turns the events of one run into stage durations.

    ``begin(stage)`` closes the stage in progress and opens ``stage``; :meth:`progress` does so
    when the executor reports a new stage, and opens ``decode`` after the last denoising step
    (the VAE decode runs inside the pipeline call and reports nothing of its own).
    """

    def __init__(self, observe: Callable[[str, float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.observe = observe
        self.clock = clock
        self.stage: str | None = None
        self.since = clock()

    def begin(self, stage: str | None) -> None:
        now = self.clock()
        if self.stage is not None:
            self.observe(self.stage, now - self.since)
        self.stage, self.since = stage, now

    def progress(self, step: int, total: int, stage: str) -> None:
        if stage != self.stage and not (self.stage == "decode" and stage == "denoise"):
            self.begin(stage)
        if stage == "denoise" and self.stage == "denoise" and total and step >= total:
            self.begin("decode")

    def finish(self) -> None:
        self.begin(None)


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (always, with no token set)."""
    if not token:
        return True
    auth = authorization or ""
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return hmac.compare_digest(given.encode(), token.encode())


def serve_metrics(metrics: Metrics, host: str, port: int, token: str | None = None) -> Callable[[], None]:
    """Serve ``metrics`` as Prometheus text on ``host:port`` from a daemon thread, behind the same
    bearer token as the API's ``/metrics``; returns a function that stops it."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    app = make_wsgi_app(metrics.registry)

    def guarded(wsgi_env: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        if not bearer_ok(str(wsgi_env.get("HTTP_AUTHORIZATION", "")), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"unauthorized\n"]
        return app(wsgi_env, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = make_server(host, port, guarded, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True,
                     name="wanflash-metrics").start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop

"""The composition root: the one place that builds what ``wanflash serve``, ``wanflash api`` and ``wanflash worker``
run, from :class:`~wanflash.config.Settings`.

Roles and what each gets:

* ``serve`` (:func:`build_services` with ``worker=True``): job source (SQLite, or PostgreSQL with
  ``WANFLASH_DATABASE_URL``), media store and signed links, job service, key ring, task router planning from the
  fleet's capabilities, executor and supervisor, webhook outbox deliverer, media sweeper, metrics.
* ``api`` (``worker=False``): the same without executor and supervisor: a stateless replica over PostgreSQL.
* ``worker`` slot or group leader (:func:`build_worker`): job source, media store, the outbox renderer set on the
  source (webhook messages are written in the completing transaction), executor, supervisor, and optional metrics.

:mod:`wanflash.api.app` receives a built :class:`Services` and only routes; process management (slots, groups,
restarts) stays in :mod:`wanflash.worker.distributed` and :mod:`wanflash.worker.group`, which call in here.
Importing this module does not import torch, Starlette or the API: each role's parts are imported when built.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from wanflash.api.auth import KeyRing
    from wanflash.api.tasks import TaskRouter
    from wanflash.config import Settings
    from wanflash.delivery import outbox, retention
    from wanflash.jobs.service import JobService
    from wanflash.jobs.source import JobSource, OutboxRenderer
    from wanflash.observability.metrics import Metrics
    from wanflash.signing import UrlSigner
    from wanflash.storage.base import ObjectStore
    from wanflash.storage.links import MediaLinks
    from wanflash.worker.executor import Executor
    from wanflash.worker.render import PipelineFactory
    from wanflash.worker.supervisor import Supervisor

log = logging.getLogger("wanflash.worker")


@dataclass
class Services:
    """Everything one ``serve`` or ``api`` process runs; the API's handlers reach it as ``app.state.services``."""

    settings: Settings
    store: JobSource
    storage: ObjectStore
    signer: UrlSigner
    jobs: JobService
    keys: KeyRing
    router: TaskRouter
    executor: Executor | None  # None in an API-only process
    supervisor: Supervisor | None
    webhooks: outbox.OutboxDeliverer
    metrics: Metrics
    sweeper: retention.MediaSweeper | None  # None when task media and uploads are both kept (-1)


def media_links(settings: Settings, storage: ObjectStore) -> MediaLinks:
    """The links ``getResponse`` and webhooks give for outputs: presigned S3 GETs, or signed ``/media`` links under
    the data directory's persisted HMAC key (or ``WANFLASH_URL_SECRET``)."""
    from wanflash.signing import UrlSigner, load_or_create_secret
    from wanflash.storage.links import MediaLinks

    return MediaLinks(storage, UrlSigner(load_or_create_secret(settings.data_dir, settings.secrets.url_secret)))


def _media(settings: Settings) -> tuple[ObjectStore, MediaLinks, OutboxRenderer]:
    """The configured media store, its links, and the outbox renderer that writes webhook messages with those
    links (on ``WANFLASH_PUBLIC_URL``, since no request is in context when a task ends)."""
    from wanflash.delivery.outbox import make_renderer
    from wanflash.storage import create_store

    storage = create_store(settings.storage, settings.data_dir)
    links = media_links(settings, storage)
    base_url = settings.server.base_url
    return storage, links, make_renderer(lambda key, exp: links.url(key, exp, base_url),
                                         settings.jobs.default_ttl_seconds)


def build_services(settings: Settings, *, pipeline_factory: PipelineFactory | str | None = None,
                   executor: Executor | None = None, worker: bool = True) -> Services:
    """The ``serve`` role (``worker=True``: this process also runs the executor) or the ``api`` role."""
    from wanflash.api.auth import KeyRing
    from wanflash.api.fleet import Fleet
    from wanflash.api.inputs import InputResolver
    from wanflash.api.tasks import TaskRouter
    from wanflash.delivery import outbox, retention
    from wanflash.jobs.service import JobService
    from wanflash.jobs.source import db_path, open_job_source
    from wanflash.observability.metrics import Metrics
    from wanflash.signing import load_or_create_webhook_secret
    from wanflash.worker.executor import create_executor
    from wanflash.worker.supervisor import Supervisor, capabilities_for

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage, links, render = _media(settings)
    store = open_job_source(settings.jobs, outbox=render, sqlite_path=db_path(settings.data_dir))
    wake = asyncio.Event()
    jobs = JobService(store, wake)
    keys = KeyRing(settings.server, store)
    ex = (executor or create_executor(settings, pipeline_factory)) if worker else None
    # Plans come from what the live workers publish; this process's own settings only stand in when
    # it hosts the worker (serve) and no record is live yet.
    fleet = Fleet(jobs, own=capabilities_for(settings) if ex is not None else None)
    router = TaskRouter(settings, jobs, InputResolver(settings.limits, jobs, storage), links, fleet)
    metrics = Metrics()
    metrics.watch_store(store, (lambda: ex.state) if ex is not None else None)
    supervisor = Supervisor(settings, store, storage, ex, wake=wake, metrics=metrics) if ex is not None else None
    sender = outbox.WebhookSender(load_or_create_webhook_secret(settings.data_dir, settings.secrets.webhook_secret),
                                  allow_loopback=settings.limits.allow_loopback_fetch)
    webhooks = outbox.OutboxDeliverer(store, sender, metrics=metrics)
    sweeper = retention.build(settings.jobs, store, storage, metrics)
    return Services(settings, store, storage, links.signer, jobs, keys, router, ex, supervisor, webhooks, metrics,
                    sweeper)


def build_app(settings: Settings, *, pipeline_factory: PipelineFactory | str | None = None,
              executor: Executor | None = None, worker: bool = True) -> Starlette:
    """The ASGI app of the ``serve`` (``worker=True``) or ``api`` role: :func:`build_services` handed to
    :func:`wanflash.api.app.create_app`."""
    from wanflash.api.app import create_app

    return create_app(build_services(settings, pipeline_factory=pipeline_factory, executor=executor, worker=worker))


def worker_media(settings: Settings) -> tuple[ObjectStore, OutboxRenderer]:
    """What a worker process needs for outputs: the configured media store (the API's: S3, or a data
    dir shared with it), and the renderer its job source is opened with, which writes the webhook
    messages at each terminal transition, in that transaction (``wanflash api`` sends them), with the
    links ``getResponse`` gives: presigned S3 GETs, or the API's signed ``/media`` links."""
    storage, _, render = _media(settings)
    return storage, render


def worker_metrics(settings: Settings, executor: Executor) -> tuple[Metrics | None, Callable[[], None]]:
    """A worker process's metrics, served on ``settings.observability.worker_metrics_port`` (the parent gives each
    slot or group its own port), and the function that stops serving them; ``(None, no-op)`` unset."""
    ops, host = settings.observability, settings.server.host
    if ops.worker_metrics_port is None:
        return None, lambda: None
    from wanflash.observability.metrics import Metrics, serve_metrics

    metrics = Metrics()
    metrics.watch_store(None, lambda: executor.state)  # the queue is the API's to report
    stop = serve_metrics(metrics, host, ops.worker_metrics_port, ops.metrics_token)
    log.info("metrics on http://%s:%d/metrics", host, ops.worker_metrics_port)
    return metrics, stop


@dataclass
class Worker:
    """One worker slot's (or group leader's) parts: start the supervisor, and :meth:`close` on the way out."""

    source: JobSource
    executor: Executor
    supervisor: Supervisor
    stop_metrics: Callable[[], None]

    async def close(self) -> None:
        """Stop the supervisor (voiding this worker's leases), the metrics server and the job source."""
        await self.supervisor.stop()
        self.stop_metrics()
        await asyncio.to_thread(self.source.close)


def build_worker(settings: Settings, *, open_source: Callable[[Settings, OutboxRenderer], JobSource] | None = None,
                 executor: Executor | None = None, pipeline_factory: str | None = None,
                 release_orphans: bool = True) -> Worker:
    """The ``worker`` role: a supervisor over the shared job source (opened by ``open_source`` with this worker's
    outbox renderer, else the configured one) running ``executor`` (else the configured executor over
    ``pipeline_factory``)."""
    from wanflash.jobs.source import open_job_source
    from wanflash.worker.executor import create_executor
    from wanflash.worker.supervisor import Supervisor

    storage, render = worker_media(settings)
    source = (open_source or (lambda s, r: open_job_source(s.jobs, outbox=r)))(settings, render)
    executor = executor if executor is not None else create_executor(settings, pipeline_factory)
    metrics, stop_metrics = worker_metrics(settings, executor)
    supervisor = Supervisor(settings, source, storage, executor, release_orphans=release_orphans, metrics=metrics)
    return Worker(source, executor, supervisor, stop_metrics)

"""The ASGI application: wiring of store, storage, router, supervisor and executor.

:func:`create_app` builds everything from :class:`Settings` and returns a Starlette app whose
lifespan starts the supervisor (and with it the executor, which loads the model in the
background, so the server accepts connections at once) and stops both on shutdown.

The job source is the embedded SQLite file, or PostgreSQL when ``settings.database_url`` is set
(:func:`wanflash.jobs.source.open_job_source`). With ``worker=False`` (``wanflash api``) the app
has no supervisor and no executor: it is a stateless API replica over the shared database, and
runs the webhook delivery loop (leased rows, so any number of replicas can run it). Either way
tasks are planned for what the workers publish (:mod:`wanflash.api.fleet`), not for this
process's engine settings.
Routes: ``/v1`` (REST and WebSocket), ``/media``, ``/health``, ``/openapi.json``, ``/metrics``
(unless ``settings.metrics`` is off) and the playground at ``/`` (when ``settings.playground``).

Tests inject the pipeline with ``pipeline_factory`` (a picklable callable or a
``"module:attribute"`` string, e.g. ``"wanflash.worker.executor:fake_pipeline"``) or a ready
``executor``. Importing this module does not import torch: the pipeline is imported inside
the executor (a child process by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from wanflash.api import http, ops, playground
from wanflash.api.auth import KeyRing, db_path
from wanflash.api.fleet import Fleet
from wanflash.api.inputs import InputResolver
from wanflash.api.limits import BodyLimits
from wanflash.api.tasks import TaskRouter
from wanflash.api.ws import Session
from wanflash.config import Settings
from wanflash.delivery import outbox, retention
from wanflash.jobs.capabilities import capabilities_for
from wanflash.jobs.service import JobService
from wanflash.jobs.source import JobSource, open_job_source
from wanflash.observability.metrics import Metrics
from wanflash.storage import create_store
from wanflash.storage.base import ObjectStore
from wanflash.storage.links import MediaLinks
from wanflash.storage.local import UrlSigner, load_or_create_secret
from wanflash.worker.render import PipelineFactory
from wanflash.worker.executor import Executor, create_executor
from wanflash.worker.supervisor import Supervisor


@dataclass
class Services:
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


def build_services(settings: Settings, *, pipeline_factory: PipelineFactory | str | None = None,
                   executor: Executor | None = None, worker: bool = True) -> Services:
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = create_store(settings)
    signer = UrlSigner(load_or_create_secret(data_dir, settings.url_secret))
    links = MediaLinks(storage, signer)
    render = outbox.make_renderer(lambda key, exp: links.url(key, exp, settings.base_url), settings.default_ttl_seconds)
    store = open_job_source(settings, outbox=render, sqlite_path=db_path(settings))
    wake = asyncio.Event()
    jobs = JobService(store, wake)
    keys = KeyRing(settings, store)
    ex = (executor or create_executor(settings, pipeline_factory)) if worker else None
    # Plans come from what the live workers publish; this process's own settings only stand in when
    # it hosts the worker (serve) and no record is live yet.
    fleet = Fleet(jobs, own=capabilities_for(settings) if ex is not None else None)
    router = TaskRouter(settings, jobs, InputResolver(settings, jobs, storage), links, fleet)
    metrics = Metrics()
    metrics.watch_store(store, (lambda: ex.state) if ex is not None else None)
    supervisor = Supervisor(settings, store, storage, ex, wake=wake, metrics=metrics) if ex is not None else None
    webhooks = outbox.build(settings, store, metrics)
    sweeper = retention.build(settings, store, storage, metrics)
    return Services(settings, store, storage, signer, jobs, keys, router, ex, supervisor, webhooks, metrics, sweeper)


_HTTP_CODES = {404: "notFound", 405: "methodNotAllowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any HTTPException) in the API's JSON error envelope, not text/plain."""
    status = getattr(exc, "status_code", 500)  # registered for HTTPException only
    code = _HTTP_CODES.get(status, "httpError")
    message = {404: "There is nothing at this path.",
               405: f"{request.method} is not allowed here."}.get(status, f"{getattr(exc, 'detail', 'Error')}.")
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status,
                        headers=getattr(exc, "headers", None))


def create_app(settings: Settings, *, pipeline_factory: PipelineFactory | str | None = None,
               executor: Executor | None = None, worker: bool = True) -> Starlette:
    services = build_services(settings, pipeline_factory=pipeline_factory, executor=executor, worker=worker)

    async def websocket(ws: WebSocket) -> None:
        await Session(ws, services.router, services.keys).run()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Everything loaded at startup (modules, models, settings) lives for the whole process;
        # frozen, the collector stops re-scanning it, and its full collections, which paused every
        # request in flight, become short (bench/RESULTS.md: poll p99 65-97 ms -> 23-28 ms).
        if services.supervisor is not None:
            services.supervisor.start()  # also imports PyAV, so the freeze below covers it
        services.webhooks.start()  # delivers outbox rows left by a previous process too
        if services.sweeper is not None:
            services.sweeper.start()
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.webhooks.stop()
            if services.sweeper is not None:
                await services.sweeper.stop()
            if services.supervisor is not None:
                await services.supervisor.stop()
            await asyncio.to_thread(services.jobs.close)
            await asyncio.to_thread(services.store.close)

    routes: list[BaseRoute] = [
        Route("/v1", http.rest, methods=["POST"]),
        WebSocketRoute("/v1", websocket),
        Route("/media/{key:path}", http.media, methods=["GET", "HEAD"]),
        Route("/health", http.health, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
    ]
    if settings.metrics:
        routes.append(Route("/metrics", ops.metrics, methods=["GET"]))
    if settings.playground:
        routes += playground.routes()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        # HTTP only (WebSocket frames are capped by the server's ws_max_size): 413 over
        # max_body_bytes, 408 when a body dribbles in slower than body_deadline_seconds.
        middleware=[Middleware(BodyLimits, max_body_bytes=settings.max_body_bytes,  # type: ignore[arg-type]
                               body_deadline_s=settings.body_deadline_seconds)],
    )
    app.state.services = services
    return app

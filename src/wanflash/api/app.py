"""The ASGI application of ``wanflash serve`` and ``wanflash api``: routes, error envelope and lifespan.

:func:`create_app` receives the :class:`~wanflash.compose.Services` the composition root built
(:func:`wanflash.compose.build_services`; :func:`wanflash.compose.build_app` does both) and wires nothing itself.
Its lifespan starts the supervisor when there is one (and with it the executor, which loads the model in the
background, so the server accepts connections at once), the webhook delivery loop and the media sweeper, and stops
them on shutdown. Without a supervisor (``wanflash api``) it is a stateless API replica over the shared database.
Either way tasks are planned for what the workers publish (:mod:`wanflash.api.fleet`), not for this process's
engine settings.
Routes: ``/v1`` (REST and WebSocket), ``/media``, ``/health``, ``/openapi.json``, ``/metrics``
(unless ``settings.observability.metrics`` is off) and the playground at ``/`` (when ``settings.server.playground``).

Importing this module does not import torch: the pipeline is imported inside the executor (a child process by
default).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from wanflash.api import http, ops, playground
from wanflash.api.limits import BodyLimits
from wanflash.api.ws import Session

if TYPE_CHECKING:
    from wanflash.compose import Services


_HTTP_CODES = {404: "notFound", 405: "methodNotAllowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any HTTPException) in the API's JSON error envelope, not text/plain."""
    status = getattr(exc, "status_code", 500)  # registered for HTTPException only
    code = _HTTP_CODES.get(status, "httpError")
    message = {404: "There is nothing at this path.",
               405: f"{request.method} is not allowed here."}.get(status, f"{getattr(exc, 'detail', 'Error')}.")
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status,
                        headers=getattr(exc, "headers", None))


def create_app(services: Services) -> Starlette:
    """The routes and lifespan over ``services`` (built by :func:`wanflash.compose.build_services`)."""
    settings = services.settings

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
    if settings.observability.metrics:
        routes.append(Route("/metrics", ops.metrics, methods=["GET"]))
    if settings.server.playground:
        routes += playground.routes()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        # HTTP only (WebSocket frames are capped by the server's ws_max_size): 413 over
        # max_body_bytes, 408 when a body dribbles in slower than body_deadline_seconds.
        middleware=[Middleware(BodyLimits, max_body_bytes=settings.limits.max_body_bytes,
                               body_deadline_s=settings.limits.body_deadline_seconds)],
    )
    app.state.services = services
    return app

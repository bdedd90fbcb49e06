"""Operator endpoints: Prometheus ``GET /metrics`` and ``GET /openapi.json``.

``/metrics`` is open by default, like most Prometheus exporters: it holds counts and timings,
never prompts, keys or URLs, and the server binds to loopback unless told otherwise. Setting
``WANFLASH_METRICS_TOKEN`` requires ``Authorization: Bearer <token>`` (Prometheus'
``authorization`` scrape option); ``WANFLASH_METRICS=0`` removes the route. The OpenAPI
document is public: it describes the protocol, nothing about this server's data.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wanflash.api.openapi import openapi_document
from wanflash.observability.metrics import CONTENT_TYPE, bearer_ok

if TYPE_CHECKING:
    from wanflash.compose import Services


def _services(request: Request) -> Services:
    return request.app.state.services


async def metrics(request: Request) -> Response:
    svc = _services(request)
    if not bearer_ok(request.headers.get("authorization"), svc.settings.observability.metrics_token):
        return Response("unauthorized\n", status_code=401, media_type="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = await asyncio.to_thread(svc.metrics.render)  # the store is read at scrape time
    return Response(body, media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(_services(request).settings))

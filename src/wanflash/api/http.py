"""HTTP endpoints: REST ``POST /v1``, signed media ``GET /media/<key>``, and ``/health``.

REST speaks the same task arrays and envelopes as the WebSocket. Auth is
``Authorization: Bearer <key>`` or an ``authentication`` task first in the array; the reply
merges every task's items into one ``{"data":[...],"errors":[...]}``. The status is 200 when at
least one task was done (the refused ones are in ``errors``), else the first refusal's status
(400, 401, 404, 413, 429, 5xx). A poll of a task that failed is a done request: 200, the task's
error in ``errors``. Every error answer, 405/408/413 included, is that JSON envelope.

Media links are checked before the file system is touched: a bad signature is 403, an
expired link 410, a missing object 404. Files are streamed by Starlette's ``FileResponse``
(which also answers ``Range`` requests).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from wanflash.api.auth import hash_key
from wanflash.api.hosts import link_base, trusted_hosts
from wanflash.api.limits import retry_after_header
from wanflash.api.tasks import Reply, error_reply, parse_tasks
from wanflash.api.ws import INVALID_KEY, PONG
from wanflash.signing import MEDIA_PREFIX
from wanflash.storage.base import InvalidKey, check_key, content_type_for

if TYPE_CHECKING:
    from wanflash.compose import Services


def _services(request: Request) -> Services:
    return request.app.state.services


def _json(reply: Reply) -> JSONResponse:
    headers = {"Retry-After": retry_after_header(reply.retry_after)} if reply.retry_after is not None else None
    return JSONResponse(reply.frame(), status_code=reply.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


async def rest(request: Request) -> Response:
    svc = _services(request)
    try:
        body = await _read_body(request, svc.settings.limits.max_body_bytes)
    except ClientDisconnect:
        return Response(status_code=400)
    if body is None:
        limit = svc.settings.limits.max_body_bytes
        return _json(error_reply("payloadTooLarge", f"The request body exceeds {limit} bytes.", status=413))
    parsed = parse_tasks(body)
    if isinstance(parsed, Reply):
        return _json(parsed)
    tasks: list[Any] = parsed

    api_key: object = None
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        api_key = auth[7:].strip()
    if tasks and isinstance(tasks[0], dict) and tasks[0].get("taskType") == "authentication":
        api_key = tasks[0].get("apiKey", api_key)
        tasks = tasks[1:]
    if api_key is None:
        return JSONResponse({"errors": [{**INVALID_KEY, "code": "missingApiKey",
                                         "message": "Send Authorization: Bearer <API key>."}]}, status_code=401)
    if not await asyncio.to_thread(svc.keys.verify, api_key):
        return JSONResponse({"errors": [INVALID_KEY]}, status_code=401)

    key_hash = hash_key(api_key) if isinstance(api_key, str) else None
    server = svc.settings.server
    base_url = link_base(server, trusted_hosts(server), request.url.scheme, request.headers.get("host"))
    replies: list[Reply] = []
    pending = []
    pongs: set[int] = set()
    for task in tasks:
        if isinstance(task, dict) and task.get("taskType") == "ping":
            pongs.add(len(replies))
            replies.append(Reply(data=list(PONG["data"])))
        else:
            replies.append(Reply())
            pending.append((len(replies) - 1, svc.router.handle(task, base_url, key_hash)))
    for (i, _), reply in zip(pending, await asyncio.gather(*(c for _, c in pending))):
        replies[i] = reply
    merged = Reply()
    failed: list[Reply] = []
    for r in replies:
        merged.data += r.data
        merged.errors += r.errors
        if r.status >= 400:
            failed.append(r)
    if failed and len(failed) == len(replies) - len(pongs):  # pings do not count as work done
        # Nothing was done: the first refusal's status, and Retry-After when that is a 429.
        merged.status = failed[0].status
        if merged.status == 429:
            merged.retry_after = max(r.retry_after or 0.0 for r in failed)
    # Otherwise some tasks were accepted: 200, with the refusals in errors[]. A 4xx/5xx would tell a
    # client the whole request failed, and runware-sdk retries 408/429/5xx by resending the whole
    # array, which would resubmit the accepted tasks (conflictTaskUUID).
    if not merged.data and not merged.errors:
        return JSONResponse({"data": []})
    return _json(merged)


async def media(request: Request) -> Response:
    svc = _services(request)
    key = request.path_params["key"]
    try:
        check_key(key)
    except InvalidKey:
        return Response("not found", status_code=404, media_type="text/plain")
    verdict = svc.signer.verify(MEDIA_PREFIX + key, request.query_params.get("exp"), request.query_params.get("sig"),
                                method="GET")
    if verdict == "invalid":
        return Response("forbidden: bad or missing signature", status_code=403, media_type="text/plain")
    if verdict == "expired":
        return Response("gone: this link has expired", status_code=410, media_type="text/plain")
    path = svc.storage.local_path(key)
    if path is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=content_type_for(key), headers={"Cache-Control": "private, max-age=3600"})


async def health(request: Request) -> Response:
    svc = _services(request)
    counts = await svc.jobs.counts()
    workers = await svc.router.fleet.summary()
    if svc.executor is None or svc.supervisor is None:  # `wanflash api`: the workers report elsewhere
        return JSONResponse({"status": "ok", "role": "api", "tasks": counts, "workers": workers})
    executor_state = svc.executor.state
    ok = executor_state in ("ready", "loading")
    return JSONResponse({
        "status": "ok" if ok else "degraded",
        "executor": {"kind": svc.executor.name, "state": executor_state},
        "profile": svc.settings.engine.profile,
        "tasks": counts,  # counts only: /health needs no key, so it names no task
        "workers": workers,  # capabilities and counts, no task or worker names
    }, status_code=200 if ok else 503)

"""One wire task in, one Runware reply out: the transport-independent core of ``/v1``.

Both transports (:mod:`wanflash.api.ws`, :mod:`wanflash.api.http`) authenticate and answer
pings themselves, then hand every other task object here. :meth:`TaskRouter.handle` never
raises: a bad task becomes ``errors`` items carrying its ``taskType`` and ``taskUUID`` and an
HTTP status (400 invalid, 404 unknown task, 5xx server side), exactly as protocol §5 asks.

``videoInference`` is checked (:func:`parse_video_task`), matched to what the live workers serve
(:mod:`wanflash.api.fleet`: the profile it is planned for, and a refusal when no worker can give it
the audio or content check it asks for), its inputs fetched and stored
(:mod:`wanflash.api.inputs`), planned (:func:`plan_job`) for that profile, persisted, and acknowledged with
``{"taskType":"videoInference","taskUUID":T}`` at once. A reused taskUUID is refused with
``conflictTaskUUID`` *before* any input is written, so a resubmission cannot touch the inputs
of the task that owns that id. ``webhookURL`` and ``uploadEndpoint`` are checked against the
SSRF policy at submit (scheme, port, userinfo, literal private/link-local/metadata hosts);
the send re-checks after DNS resolution.

Abuse limits, per API key (identified by the SHA-256 of the key, never the key itself): a
token bucket on tasks handled (``rate_limit_per_s``/``rate_limit_burst``; pings are free)
and a cap on ``videoInference`` tasks queued+running (``max_in_flight_per_key``), counted
in the task store inside the insert transaction so it holds across restarts and processes.
Both answer ``rateLimitExceeded`` with HTTP status 429 and ``Reply.retry_after`` (sent as
``Retry-After`` over REST; over WebSocket the error item carries the taskUUID).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wanflash.api.limits import RateLimiter
from wanflash.contract.validation import check_task_uuid, parse_video_task, plan_job
from wanflash.delivery.responses import not_found, poll_reply
from wanflash.errors import InvalidRequest, RunwareError, ServiceOverloaded
from wanflash.net.ssrf import validate_url
from wanflash.observability.logs import task_context

if TYPE_CHECKING:
    from wanflash.api.fleet import Fleet
    from wanflash.api.inputs import InputResolver
    from wanflash.config import Settings
    from wanflash.jobs.service import JobService
    from wanflash.storage.links import MediaLinks

log = logging.getLogger(__name__)


@dataclass
class Reply:
    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    retry_after: float | None = None  # seconds; set with status 429

    def frame(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.data:
            out["data"] = self.data
        if self.errors:
            out["errors"] = self.errors
        return out


def error_reply(code: str, message: str, *, status: int = 400, parameter: str | None = None,
                task_type: str | None = None, task_uuid: str | None = None) -> Reply:
    return Reply(errors=[RunwareError(code, message, parameter, task_type, task_uuid).to_wire()], status=status)


MAX_JSON_DEPTH = 32  # the deepest real task (safety inside providerSettings, frameImages) is 4 levels


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_tasks(text: str | bytes, *, what: str = "The body") -> list[Any] | Reply:
    """A request body or WebSocket frame as its list of task objects, or the ``invalidPayload`` reply.

    Python's parser recurses once per nesting level, so a 100,000-deep array raises RecursionError
    (not ValueError); that, and anything nested deeper than :data:`MAX_JSON_DEPTH`, is refused
    here, before any other code walks the value."""
    bad = error_reply("invalidPayload", f"{what} must be a JSON array of task objects.")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return bad
    if _too_deep(payload, MAX_JSON_DEPTH):
        return error_reply("invalidPayload", f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels.")
    return payload if isinstance(payload, list) else [payload]


def _str(task: dict[str, Any], name: str) -> str | None:
    value = task.get(name)
    return value if isinstance(value, str) else None


class TaskRouter:
    def __init__(self, settings: Settings, jobs: JobService, resolver: InputResolver, links: MediaLinks,
                 fleet: Fleet) -> None:
        self.settings = settings
        self.jobs = jobs
        self.resolver = resolver
        self.links = links
        self.fleet = fleet
        self._submitting: set[str] = set()
        self.rate = RateLimiter(settings.limits.rate_limit_per_s, settings.limits.rate_limit_burst)

    def media_url(self, base_url: str, key: str, expires_at: float) -> str:
        return self.links.url(key, expires_at, self.settings.server.public_url or base_url)

    async def handle(self, task: Any, base_url: str, key_hash: str | None = None) -> Reply:
        """Answer one task. ``key_hash`` (the caller's hashed API key) owns what the task creates, is
        the only key that sees it, and enables the per-key limits."""
        tu = _str(task, "taskUUID") if isinstance(task, dict) else None
        with task_context(tu):
            return await self._handle(task, base_url, key_hash)

    async def _handle(self, task: Any, base_url: str, key_hash: str | None) -> Reply:
        if not isinstance(task, dict):
            return error_reply("invalidPayload", "Each element of the request array must be a task object.")
        task_type = _str(task, "taskType")
        tu = _str(task, "taskUUID")
        if key_hash is not None:
            wait = self.rate.check(key_hash)
            if wait is not None:
                reply = error_reply("rateLimitExceeded", f"Too many requests for this API key; retry in {wait:.1f} s.",
                                    status=429, task_type=task_type, task_uuid=tu)
                reply.retry_after = wait
                return reply
        try:
            if task_type == "videoInference":
                return await self._video_inference(task, base_url, key_hash)
            if task_type == "getResponse":
                return await self._get_response(task, base_url, key_hash)
            if task_type == "imageUpload":
                return await self._image_upload(task, base_url, key_hash)
            if task_type == "mediaStorage":
                return await self._media_storage(task, key_hash)
            if task_type is None:
                return error_reply("missingTaskType", "taskType is required.", parameter="taskType", task_uuid=tu)
            return error_reply("unsupportedTaskType", f"taskType '{task_type}' is not served here.",
                               parameter="taskType", task_type=task_type, task_uuid=tu)
        except InvalidRequest as exc:
            return Reply(errors=[e.to_wire() for e in exc.errors], status=exc.status)
        except ServiceOverloaded as exc:
            reply = error_reply("rateLimitExceeded", str(exc), status=exc.status, task_type=task_type, task_uuid=tu)
            reply.retry_after = exc.retry_after
            return reply
        except Exception:
            log.exception("task %s (%s) failed", tu, task_type)
            return error_reply("internalServerError", "The server failed to process this task.", status=500,
                               task_type=task_type, task_uuid=tu)

    async def _video_inference(self, raw: dict[str, Any], base_url: str, key_hash: str | None = None) -> Reply:
        task = parse_video_task(raw)
        tu = task.taskUUID
        target = await self.fleet.plan_target(task)  # refuses audio/safety no worker serves
        for name in ("webhookURL", "uploadEndpoint"):
            url = getattr(task, name)
            if url is not None:
                try:
                    validate_url(url, parameter=name, allow_loopback=self.settings.limits.allow_loopback_fetch,
                                 code=f"invalid{name[0].upper()}{name[1:]}")
                except InvalidRequest as exc:
                    raise InvalidRequest([RunwareError(e.code, e.message, e.parameter, "videoInference", tu)
                                          for e in exc.errors]) from None
        cap = self.settings.limits.max_in_flight_per_key if key_hash is not None else None
        # Cheap early refusal before any input is fetched; the insert re-checks atomically.
        if cap is not None and await self.jobs.in_flight(key_hash) >= cap:  # type: ignore[arg-type]
            raise ServiceOverloaded(f"This API key already has {cap} tasks queued or running; retry when one "
                                    "finishes.", retry_after=1.0)
        # Refuse a reused id before touching storage: inputs are written under inputs/<taskUUID>/.
        # Across keys too (taskUUID is the primary key): this tells a caller that a UUID it already
        # holds is taken, nothing more (no state, owner or result), and UUIDv4 ids cannot be guessed.
        if tu in self._submitting or await self.jobs.exists(tu):
            raise InvalidRequest([RunwareError(
                "conflictTaskUUID", f"A task with taskUUID '{tu}' already exists; use a new UUID.",
                parameter="taskUUID", task_type="videoInference", task_uuid=tu)])
        self._submitting.add(tu)
        try:
            inputs = await self.resolver.resolve(task, key_hash)  # on failure it removes what it stored
            try:
                spec = plan_job(task, profile=target, inputs=inputs)
                await self.jobs.submit(spec, key_hash=key_hash, max_in_flight=cap)
            except Exception as exc:
                # A refused task leaves no inputs behind; but a conflict lost to another API process
                # means the keys are the winner's, which must stay. (Not on cancellation: a client
                # gone mid-submit does not stop the shielded insert, which may still succeed.)
                if not (isinstance(exc, InvalidRequest) and exc.errors[0].code == "conflictTaskUUID"):
                    await self.resolver.discard(inputs)
                raise
        finally:
            self._submitting.discard(tu)
        return Reply(data=[{"taskType": "videoInference", "taskUUID": tu}])

    async def _get_response(self, task: dict[str, Any], base_url: str, owner: str | None) -> Reply:
        tu = _str(task, "taskUUID")
        if not tu:
            return error_reply("missingTaskUUID", "getResponse needs the taskUUID of the task to poll.",
                               parameter="taskUUID", task_type="getResponse")
        record = await self.jobs.get(tu)
        if record is None or record.owner != owner:  # another key's task: the same answer as none at all
            r = not_found(tu)
        else:
            r = poll_reply(record, lambda key, exp: self.media_url(base_url, key, exp),
                           default_ttl=self.settings.jobs.default_ttl_seconds)
        return Reply(data=r.data, errors=r.errors, status=r.status)

    async def _image_upload(self, task: dict[str, Any], base_url: str, owner: str | None) -> Reply:
        check_task_uuid(task.get("taskUUID"), "imageUpload")
        tu = _str(task, "taskUUID")
        image_uuid, key = await self.resolver.upload_image(task.get("image"), tu, owner)
        url = self.media_url(base_url, key, time.time() + self.settings.jobs.default_ttl_seconds)
        return Reply(data=[{"taskType": "imageUpload", "taskUUID": tu, "imageUUID": image_uuid, "imageURL": url}])

    async def _media_storage(self, task: dict[str, Any], owner: str | None) -> Reply:
        check_task_uuid(task.get("taskUUID"), "mediaStorage")
        tu = _str(task, "taskUUID")
        operation = task.get("operation", "upload")
        if operation != "upload":
            return error_reply("unsupportedOperation", "mediaStorage supports operation 'upload' only.",
                               parameter="operation", task_type="mediaStorage", task_uuid=tu)
        media_uuid, _ = await self.resolver.upload_media(task.get("media"), tu, owner)
        return Reply(data=[{"taskType": "mediaStorage", "taskUUID": tu, "mediaUUID": media_uuid}])

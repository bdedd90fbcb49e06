"""The OpenAPI 3.1 description of the REST surface, served at ``/openapi.json``.

Schemas are generated from pydantic models (JSON Schema 2020-12, which OpenAPI 3.1 uses as
is): the real wire model :class:`~wanflash.contract.protocol.VideoInferenceTask` and result
:class:`~wanflash.contract.protocol.VideoResult`, the playground's estimate models, and small models
below for the tasks the router reads field by field (authentication, ping, getResponse,
imageUpload, mediaStorage) and for the envelopes. One thing JSON Schema generation cannot see
is patched in: ``inputs.frameImages`` items may be plain strings (a before-validator turns
them into ``{"image": ...}``).
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from wanflash import MODEL_ID, __version__
from wanflash.contract.protocol import VideoInferenceTask, VideoResult
from wanflash.formats import OUTPUT_FORMATS

if TYPE_CHECKING:
    from wanflash.config import Settings

REF = "#/components/schemas/{model}"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuthenticationTask(_Doc):
    """Authenticate (REST: instead of the ``Authorization`` header, first in the array)."""

    taskType: Literal["authentication"]
    apiKey: str
    connectionSessionUUID: str | None = None


class PingTask(_Doc):
    """Keep-alive; answered with ``{"taskType":"ping","pong":true}``."""

    taskType: Literal["ping"]
    ping: bool | None = None


class GetResponseTask(_Doc):
    """Poll a ``videoInference`` task: N ``processing`` items, N results, or one error."""

    taskType: Literal["getResponse"]
    taskUUID: str


class ImageUploadTask(_Doc):
    """Store an image (URL, data URI or base64) and get an ``imageUUID`` usable in ``inputs.frameImages``."""

    taskType: Literal["imageUpload"]
    taskUUID: str | None = None
    image: str


class MediaStorageTask(_Doc):
    """Store a media file (audio for ``inputs.audio``) and get a ``mediaUUID``."""

    taskType: Literal["mediaStorage"]
    taskUUID: str | None = None
    operation: Literal["upload"] = "upload"
    media: str


class VideoInferenceAck(_Doc):
    """The immediate answer to ``videoInference`` (``deliveryMethod: async``)."""

    taskType: Literal["videoInference"]
    taskUUID: str


class VideoProgress(_Doc):
    """A ``getResponse`` item while the task is queued or running (one per requested result)."""

    taskType: Literal["videoInference"]
    taskUUID: str
    status: Literal["processing"]
    progress: float | None = Field(default=None, description="percent of the current stage's steps")
    stage: str | None = Field(default=None, description="denoise | encode | ...")
    progressStep: int | None = None
    progressTotal: int | None = None


class ImageUploadResult(_Doc):
    taskType: Literal["imageUpload"]
    taskUUID: str | None = None
    imageUUID: str
    imageURL: str


class MediaStorageResult(_Doc):
    taskType: Literal["mediaStorage"]
    taskUUID: str | None = None
    mediaUUID: str


class Pong(_Doc):
    taskType: Literal["ping"]
    pong: Literal[True]


class ErrorItem(_Doc):
    """Runware's error shape: ``parameter`` names the offending request field."""

    code: str
    message: str
    parameter: str | None = None
    taskType: str | None = None
    taskUUID: str | None = None


class Envelope(_Doc):
    """Every ``/v1`` answer: results in ``data``, failures in ``errors`` (either may be absent)."""

    data: list[VideoResult | VideoProgress | VideoInferenceAck | ImageUploadResult | MediaStorageResult | Pong
               ] | None = None
    errors: list[ErrorItem] | None = None


TaskItem = (VideoInferenceTask | GetResponseTask | ImageUploadTask | MediaStorageTask | AuthenticationTask
            | PingTask)
_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    VideoInferenceTask, GetResponseTask, ImageUploadTask, MediaStorageTask, AuthenticationTask, PingTask)


def _schemas() -> dict[str, Any]:
    from wanflash.api.playground import Estimate, EstimateRequest

    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m, "validation") for m in (*_REQUEST_MODELS, EstimateRequest)]  # type: ignore[misc]
    models += [(m, "serialization") for m in (Envelope, Estimate)]
    _, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    items = schemas["Inputs"]["properties"]["frameImages"]["anyOf"][0]
    items["items"] = {"anyOf": [{"type": "string", "minLength": 1,
                                 "description": "shorthand for {\"image\": <string>}"}, items["items"]]}
    return schemas


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}}


@functools.lru_cache(maxsize=4)
def _document(playground: bool, metrics: bool, metrics_token: bool, server: str) -> dict[str, Any]:
    task_refs = [{"$ref": REF.format(model=m.__name__)} for m in _REQUEST_MODELS]
    envelope = _json("Envelope", "Results and/or errors, one item per result or error.")
    paths: dict[str, Any] = {
        "/v1": {"post": {
            "summary": "Run Runware tasks (videoInference, getResponse, imageUpload, mediaStorage, ping)",
            "description": f"The same task arrays as the WebSocket at ws(s)://<host>/v1. Model: `{MODEL_ID}`. "
                           "Status 200 when at least one task was done (refused ones are in errors[]; a poll of a "
                           "failed task is done: 200 with the task's error), else the first refusal's status. "
                           "Every error answer is the JSON envelope.",
            "security": [{"bearer": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "array", "items": {"anyOf": task_refs}}}}},
            "responses": {
                "200": envelope, "400": envelope, "401": envelope, "404": envelope, "405": envelope,
                "408": envelope, "413": envelope,
                "429": {**envelope, "headers": {"Retry-After": {"schema": {"type": "string"}}}},
                "500": envelope, "503": envelope, "504": envelope,
            },
        }},
        "/media/{key}": {"get": {
            "summary": "Download an output or uploaded input through a signed link (from videoURL/imageURL)",
            "parameters": [
                {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "exp", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "The file (Range requests supported).",
                        "content": {**{f.mime_type: {} for f in OUTPUT_FORMATS.values()}, "image/png": {}}},
                "403": {"description": "Bad or missing signature."},
                "404": {"description": "No such object."},
                "410": {"description": "The link expired."},
            },
        }},
        "/health": {"get": {
            "summary": "Executor state, task counts and the live workers' capabilities",
            "responses": {"200": {"description": "Ready or loading.", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "503": {"description": "The executor failed."}},
        }},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
            "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    if metrics:
        paths["/metrics"] = {"get": {
            "summary": "Prometheus metrics (text exposition format)",
            **({"security": [{"metricsToken": []}]} if metrics_token else {}),
            "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {
                "schema": {"type": "string"}}}}, "401": {"description": "Missing or wrong token."}},
        }}
    if playground:
        paths["/"] = {"get": {"summary": "The playground web page", "responses": {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}}
        paths["/playground/estimate"] = {"post": {
            "summary": "Plan and price a videoInference task without running it (no key needed)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "$ref": REF.format(model="EstimateRequest")}}}},
            "responses": {"200": _json("Estimate", "Size, duration, frames and cost the server would use."),
                          "400": envelope},
        }}
    components: dict[str, Any] = {
        "schemas": _schemas(),
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}},
    }
    if metrics_token:
        components["securitySchemes"]["metricsToken"] = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "wanflash", "version": __version__,
                 "description": f"Self-hosted Runware-compatible videoInference for `{MODEL_ID}`."},
        "servers": [{"url": server}],
        "paths": paths,
        "components": components,
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for this server's settings (a fresh copy: callers may modify it)."""
    server, ops = settings.server, settings.observability
    return copy.deepcopy(_document(server.playground, ops.metrics, bool(ops.metrics_token), server.base_url))

"""The playground: a web page at ``/`` (when ``settings.server.playground``) and the two helpers it calls.

* ``GET /`` and ``/playground/*``: plain HTML, CSS and JavaScript shipped as package data
  (``wanflash/api/playground/``). Nothing comes from a CDN; the page's Content-Security-Policy
  allows scripts and styles from this origin only.
* ``GET /playground/config.json``: the model id, the listed sizes, each option's limits and
  enums (read from the wire model's JSON schema) and the defaults (what :func:`plan_job` makes
  of a minimal task), so the page offers exactly what the server accepts; ``profile`` and ``fps``
  are what the workers publish (:mod:`wanflash.api.fleet`; null before any worker has); ``formats``
  gives each output format's suffix and MIME type (:mod:`wanflash.formats`).
* ``POST /playground/estimate``: ``{"task": <videoInference task>, "imageSize": [w, h]}`` ->
  the size, duration, frames and cost the server would plan (:func:`plan_job` for the profile
  the workers serve, priced by :mod:`wanflash.contract.pricing`), or the Runware errors naming each bad parameter.
  Nothing is fetched or stored and no key is needed: it reveals prices and rules only.

The page itself talks to ``/v1`` over the WebSocket with the user's API key, like any client.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from wanflash import MODEL_ID
from wanflash.contract.protocol import VideoInferenceTask
from wanflash.contract.validation import SIZES, ResolvedInputs, parse_video_task, plan_job
from wanflash.errors import InvalidRequest, RunwareError
from wanflash.formats import OUTPUT_FORMATS
from wanflash.pipelines.profiles import get_profile

if TYPE_CHECKING:
    from wanflash.compose import Services

STATIC = Path(__file__).parent / "playground"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
       "media-src 'self' blob: http: https:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'")
OPTIONS = ("positivePrompt", "negativePrompt", "duration", "seed", "numberResults", "outputFormat", "outputQuality",
           "resolution")


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: dict[str, Any] = Field(description="a videoInference task, as it would be sent to /v1")
    imageSize: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="the frame image's width and height")


class Estimate(BaseModel):
    cost: float
    width: int
    height: int
    duration: int
    fps: int
    numFrames: int
    numberResults: int
    audio: bool
    durationFollowsAudio: bool = Field(description="no duration given: the input track's length decides it")


def _services(request: Request) -> Services:
    return request.app.state.services


def _limits(prop: dict[str, Any]) -> dict[str, Any]:
    """minimum/maximum/enum/length of one property schema (the non-null branch of an Optional)."""
    branch = next((b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"), prop)
    keys = ("minimum", "maximum", "enum", "minLength", "maxLength", "const")
    return {k: branch[k] for k in keys if k in branch}


async def playground_config(services: Services) -> dict[str, Any]:
    schema = VideoInferenceTask.model_json_schema()
    props = schema["properties"]
    defs = schema["$defs"]
    minimal = parse_video_task({"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL_ID,
                                "positivePrompt": "x", "resolution": "720p"})
    # The profile the workers serve (None before any worker has published, in `wanflash api`).
    target = await services.router.fleet.preview()
    spec = plan_job(minimal, profile=target or get_profile(services.settings.engine.profile))
    return {
        "model": MODEL_ID,
        "profile": target.profile if target else None,
        "fps": spec.fps if target else None,
        "sizes": {cls: [list(wh) for wh in whs] for cls, whs in SIZES.items()},
        "formats": {f.name: {"suffix": f.suffix, "mimeType": f.mime_type} for f in OUTPUT_FORMATS.values()},
        "limits": {
            **{name: _limits(props[name]) for name in OPTIONS},
            "shotType": _limits(defs["AlibabaSettings"]["properties"]["shotType"]),
            "safetyMode": _limits(defs["Safety"]["properties"]["mode"]),
        },
        "defaults": {
            "duration": spec.duration, "numberResults": spec.number_results, "outputFormat": spec.output_format,
            "outputQuality": spec.output_quality, "audio": spec.audio, "promptExtend": spec.prompt_extend,
            "shotType": spec.shot_type, "safetyMode": spec.safety_mode,
        },
    }


async def config(request: Request) -> Response:
    return JSONResponse(await playground_config(_services(request)))


async def estimate(request: Request) -> Response:
    try:
        body = EstimateRequest.model_validate_json(await request.body())
        task = parse_video_task(body.task)
        inputs = ResolvedInputs(image_size=body.imageSize)
        target = await _services(request).router.fleet.plan_target(task)  # as a submit would plan it
        spec = plan_job(task, profile=target, inputs=inputs)
    except ValidationError as exc:
        err = RunwareError("invalidPayload", f"Expected {{\"task\": {{...}}, \"imageSize\": [w, h]}}: "
                           f"{exc.errors(include_url=False)[0]['msg']}.")
        return JSONResponse({"errors": [err.to_wire()]}, status_code=400)
    except InvalidRequest as exc:
        return JSONResponse({"errors": [e.to_wire() for e in exc.errors]}, status_code=exc.status)
    has_audio_input = bool(task.inputs and task.inputs.audio)
    out = Estimate(cost=spec.cost, width=spec.width, height=spec.height, duration=spec.duration, fps=spec.fps,
                   numFrames=spec.num_frames, numberResults=spec.number_results, audio=spec.audio,
                   durationFollowsAudio=has_audio_input and task.duration is None)
    return JSONResponse(out.model_dump())


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/playground/config.json", config, methods=["GET"]),
        Route("/playground/estimate", estimate, methods=["POST"]),
        Mount("/playground", StaticFiles(directory=STATIC), name="playground"),
    ]

"""Wire task -> :class:`JobSpec`, or a list of Runware-shaped errors.

Validation runs in two steps because one rule depends on the input image: ``resolution``
with a frame image picks the listed size closest to the image's aspect ratio.

1. :func:`parse_video_task` checks types, ranges, enums, unknown fields and every cross-field
   rule on the model page. It needs nothing but the request.
2. :func:`plan_job` applies defaults, picks the size, plans frames and seeds and prices the
   task, given what the inputs resolved to (storage keys, image size, audio length) and the
   profile it will run on (its name and fps: in the service, what the chosen live workers
   published, see :mod:`wanflash.api.fleet`).

The API's router (:mod:`wanflash.api.tasks`) and ``wanflash generate`` chain both around their own
input resolution. Every failure is an :class:`InvalidRequest` whose items name the parameter;
nothing here uses ``assert``.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from wanflash import MODEL_ID
from wanflash.contract.pricing import task_cost
from wanflash.contract.protocol import MAX_SEED, VideoInferenceTask
from wanflash.errors import InvalidRequest, RunwareError
from wanflash.formats import DEFAULT_FORMAT
from wanflash.jobs.model import JobSpec

TASK_TYPE = "videoInference"


class PlanProfile(Protocol):
    """What planning needs of a profile: a :class:`~wanflash.pipelines.profiles.Profile`, or the
    :class:`~wanflash.jobs.capabilities.WorkerCapabilities` a worker published."""

    @property
    def name(self) -> str: ...

    @property
    def fps(self) -> int: ...

# The ten sizes on the model page, by resolution class.
SIZES: dict[str, list[tuple[int, int]]] = {
    "720p": [(1280, 720), (720, 1280), (960, 960), (1088, 832), (832, 1088)],
    "1080p": [(1920, 1080), (1080, 1920), (1440, 1440), (1632, 1248), (1248, 1632)],
}
SIZE_CLASS: dict[tuple[int, int], str] = {wh: cls for cls, whs in SIZES.items() for wh in whs}

DEFAULT_DURATION = 5  # seconds, as on the model page; the other defaults are applied in plan_job

# Path segments that are containers, not names, when deriving an error code.
_CONTAINERS = {"inputs", "providerSettings", "alibaba"}


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _code(prefix: str, loc: tuple[Any, ...]) -> str:
    names = [str(p) for p in loc if isinstance(p, str) and p not in _CONTAINERS]
    if not names:
        names = [str(p) for p in loc if isinstance(p, str)] or ["parameter"]
    if names[0] == "safety" and len(names) > 1:
        names = ["safety", *names[1:]]
    else:
        names = names[-1:]
    return prefix + "".join(n[:1].upper() + n[1:] for n in names)


def _err(code: str, message: str, parameter: str | None, task_uuid: str | None) -> RunwareError:
    return RunwareError(code=code, message=message, parameter=parameter, task_type=TASK_TYPE, task_uuid=task_uuid)


def _pydantic_errors(exc: ValidationError, task_uuid: str | None) -> list[RunwareError]:
    errors: list[RunwareError] = []
    for e in exc.errors(include_url=False):
        loc = tuple(e["loc"])
        param = _param(loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            errors.append(
                _err("unsupportedParameter", f"Unknown parameter '{param}': it is not part of {MODEL_ID}.",
                     param, task_uuid)
            )
        elif kind == "missing":
            errors.append(_err(_code("missing", loc), f"Missing required parameter '{param}'.", param, task_uuid))
        else:
            detail = e["msg"]
            if kind == "literal_error":
                detail = "Value should be " + detail.removeprefix("Input should be ")
            errors.append(_err(_code("invalid", loc), f"Invalid value for '{param}': {detail}.", param, task_uuid))
    return errors


def check_task_uuid(value: object, task_type: str) -> None:
    """The taskUUID rule of ``videoInference``, for the other task types (``imageUpload``,
    ``mediaStorage``): present, a string, and a UUID v4. Raises :class:`InvalidRequest`."""
    tu = value if isinstance(value, str) else None
    if value is None:
        raise InvalidRequest([RunwareError("missingTaskUUID", "Missing required parameter 'taskUUID'.", "taskUUID",
                                           task_type, None)])
    try:
        if tu is None:
            raise ValueError
        parsed = uuid.UUID(tu)
        if parsed.version != 4 or len(tu) != 36:
            raise ValueError
    except ValueError:
        raise InvalidRequest([RunwareError("invalidTaskUUID", "taskUUID must be a UUID v4 (8-4-4-4-12 hex digits).",
                                           "taskUUID", task_type, tu)]) from None


def parse_video_task(raw: Mapping[str, Any], *, native_audio: bool = True) -> VideoInferenceTask:
    """Check one wire task against every rule of the model page. Raises :class:`InvalidRequest`.

    ``native_audio`` is false when the server has no audio model (``WANFLASH_AUDIO_MODEL=none``):
    a task that would need generated sound is then refused rather than billed for sound it lacks.
    """
    task_uuid = raw.get("taskUUID") if isinstance(raw.get("taskUUID"), str) else None
    try:
        task = VideoInferenceTask.model_validate(dict(raw))
    except ValidationError as exc:
        raise InvalidRequest(_pydantic_errors(exc, task_uuid)) from None

    tu = task.taskUUID
    errors: list[RunwareError] = []

    try:
        parsed = uuid.UUID(tu)
        if parsed.version != 4 or len(tu) != 36:
            raise ValueError
    except ValueError:
        errors.append(_err("invalidTaskUUID", "taskUUID must be a UUID v4 (8-4-4-4-12 hex digits).", "taskUUID", tu))

    if task.model != MODEL_ID:
        errors.append(_err("invalidModel", f"Unknown model '{task.model}'; this server serves '{MODEL_ID}'.",
                           "model", tu))

    has_w, has_h = task.width is not None, task.height is not None
    if has_w != has_h:
        missing = "height" if has_w else "width"
        errors.append(_err(f"missing{missing.capitalize()}", "width and height must be used together.", missing, tu))
    if task.resolution is not None and (has_w or has_h):
        errors.append(_err("conflictResolutionWidthHeight", "resolution cannot be used with width/height.",
                           "resolution", tu))
    if has_w and has_h and (task.width, task.height) not in SIZE_CLASS:
        listed = ", ".join(f"{w}x{h}" for w, h in SIZE_CLASS)
        errors.append(_err("invalidDimensions",
                           f"width/height {task.width}x{task.height} is not a supported size; use one of {listed}.",
                           "width", tu))

    frames = task.inputs.frameImages if task.inputs else None
    if frames is not None:
        if len(frames) == 0:
            errors.append(_err("invalidFrameImages", "inputs.frameImages needs one image when present.",
                               "inputs.frameImages", tu))
        elif len(frames) > 1:
            errors.append(_err("invalidFrameImages",
                               f"inputs.frameImages accepts at most one image (the first frame); got {len(frames)}.",
                               "inputs.frameImages", tu))
    if not frames and not (has_w and has_h) and task.resolution is None:
        errors.append(_err("missingDimensions",
                           "Provide inputs.frameImages, or width and height, or resolution.", "resolution", tu))

    alibaba = task.providerSettings.alibaba if task.providerSettings else None
    if alibaba and alibaba.shotType == "multi" and alibaba.promptExtend is False:
        errors.append(_err("conflictShotTypePromptExtend",
                           "shotType 'multi' requires providerSettings.alibaba.promptExtend to be true.",
                           "providerSettings.alibaba.shotType", tu))
    if task.inputs and task.inputs.audio is not None and alibaba and alibaba.audio is False:
        errors.append(_err("conflictAudio",
                           "inputs.audio cannot be used with providerSettings.alibaba.audio=false: the supplied "
                           "track is the output's soundtrack. Omit providerSettings.alibaba.audio or set it true.",
                           "providerSettings.alibaba.audio", tu))

    if not native_audio and needs_generated_audio(task):
        errors.append(unsupported_audio(tu, "This server has no audio model"))

    if task.safety and task.safety.checkContent is False and task.safety.mode in ("fast", "full"):
        errors.append(_err("conflictSafety", "safety.mode requires safety.checkContent to be true (or omitted).",
                           "safety.mode", tu))

    for name in ("webhookURL", "uploadEndpoint"):
        value = getattr(task, name)
        if value is not None and not value.lower().startswith(("http://", "https://")):
            errors.append(_err(f"invalid{name[0].upper()}{name[1:]}", f"{name} must be an http(s) URL.", name, tu))

    if errors:
        raise InvalidRequest(errors)
    return task


@dataclass(frozen=True)
class ResolvedInputs:
    """What the task's inputs became once fetched, checked and stored."""

    image_key: str | None = None
    image_size: tuple[int, int] | None = None
    audio_key: str | None = None
    audio_seconds: float | None = None


def pick_size(resolution: str, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The listed size of ``resolution`` closest in aspect ratio to the image (16:9 without one)."""
    if image_size is None:
        return SIZES[resolution][0]
    iw, ih = image_size
    target = iw / ih
    # Compare in log space so 2:1 and 1:2 are equally far from 1:1.
    return min(SIZES[resolution], key=lambda wh: abs(math.log((wh[0] / wh[1]) / target)))


def plan_job(
    task: VideoInferenceTask,
    *,
    profile: PlanProfile,
    inputs: ResolvedInputs = ResolvedInputs(),
    draw_seed: Callable[[], int] = lambda: secrets.randbelow(MAX_SEED + 1),
) -> JobSpec:
    """Apply defaults, choose size, frames and seeds, and price the task."""
    alibaba = task.providerSettings.alibaba if task.providerSettings and task.providerSettings.alibaba else None
    has_audio_input = bool(task.inputs and task.inputs.audio)

    if task.width is not None and task.height is not None:
        width, height = task.width, task.height
    else:
        width, height = pick_size(task.resolution or "720p", inputs.image_size)
    resolution_class = SIZE_CLASS[(width, height)]

    if task.duration is not None:
        duration = task.duration
    elif has_audio_input and inputs.audio_seconds is not None:
        # Audio-to-video: the clip follows the track, clamped to the model's 2-15 s range.
        duration = min(15, max(2, int(round(inputs.audio_seconds))))
    else:
        duration = DEFAULT_DURATION

    n = task.numberResults or 1
    if task.seed is not None:
        base, was_random = task.seed, False
    else:
        base, was_random = draw_seed(), True
    seeds = [(base + i) % (MAX_SEED + 1) for i in range(n)]

    audio_flag = alibaba.audio if alibaba and alibaba.audio is not None else True
    audio = audio_flag or has_audio_input
    safety_mode = requested_safety_mode(task)
    return JobSpec(
        task_uuid=task.taskUUID,
        model=task.model,
        profile=profile.name,
        positive_prompt=task.positivePrompt,
        negative_prompt=task.negativePrompt,
        width=width,
        height=height,
        resolution_class=resolution_class,  # type: ignore[arg-type]
        duration=duration,
        fps=profile.fps,
        num_frames=duration * profile.fps,
        image_key=inputs.image_key,
        image_size=inputs.image_size,
        audio_key=inputs.audio_key,
        audio_seconds=inputs.audio_seconds,
        seeds=seeds,
        seed_was_random=was_random,
        number_results=n,
        audio=audio,
        prompt_extend=alibaba.promptExtend if alibaba and alibaba.promptExtend is not None else True,
        shot_type=(alibaba.shotType if alibaba and alibaba.shotType else "single"),
        output_format=task.outputFormat or DEFAULT_FORMAT,
        output_quality=task.outputQuality if task.outputQuality is not None else 95,
        ttl=task.ttl,
        include_cost=bool(task.includeCost),
        cost=task_cost(resolution_class, duration, audio=audio, number_results=n),  # type: ignore[arg-type]
        webhook_url=task.webhookURL,
        upload_endpoint=task.uploadEndpoint,
        safety_check=safety_mode != "none",
        safety_mode=safety_mode,  # type: ignore[arg-type]
    )


def requested_safety_mode(task: VideoInferenceTask) -> str:
    """``none``, ``fast`` or ``full``: an explicit ``safety.mode`` wins; ``checkContent: true``
    without a mode means ``fast`` (the model page's default)."""
    if task.safety is None:
        return "none"
    if task.safety.mode is not None:
        return task.safety.mode
    return "fast" if task.safety.checkContent else "none"


def needs_generated_audio(task: VideoInferenceTask) -> bool:
    """The output has sound (``audio`` not false) and no ``inputs.audio`` track supplies it: an
    audio model must generate it."""
    alibaba = task.providerSettings.alibaba if task.providerSettings else None
    return not (task.inputs and task.inputs.audio) and not (alibaba and alibaba.audio is False)


def unsupported_audio(task_uuid: str | None, why: str) -> RunwareError:
    """``why`` (e.g. "This server has no audio model"), and what the client can do instead."""
    return _err("unsupportedAudio", f"{why}: set providerSettings.alibaba.audio to false, or supply the "
                "soundtrack in inputs.audio.", "providerSettings.alibaba.audio", task_uuid)


def unsupported_safety(task: VideoInferenceTask, why: str) -> RunwareError:
    """``why`` (e.g. "no worker has a content detector (WANFLASH_SAFETY_DETECTOR)"), naming the safety
    parameter the request used."""
    param = "safety.mode" if task.safety is not None and task.safety.mode is not None else "safety.checkContent"
    return _err("unsupportedSafetyCheck",
                f"Content checking was requested, but {why}; send safety.checkContent false or ask the "
                "operator to enable one.", param, task.taskUUID)

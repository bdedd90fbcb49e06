"""The job specification and task states: plain data shared by the API, the store and workers.

A :class:`JobSpec` is the only thing that crosses the queue. It is JSON, fully resolved
(sizes, frame counts, seeds, cost) and refers to inputs by storage key, never inline bytes.
A finished task stores one :class:`OutputRecord` per result (with the :class:`PromptExtension`
it was generated from), typed on both sides of the database.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from wanflash.formats import OutputFormat


class TaskState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class JobSpec(BaseModel):
    """A validated, fully planned ``videoInference`` task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_uuid: str
    model: str
    profile: str
    positive_prompt: str
    negative_prompt: str | None = None

    # geometry and time: the output is exactly width x height, num_frames at fps
    width: int
    height: int
    resolution_class: Literal["720p", "1080p"]
    duration: int
    fps: int
    num_frames: int  # duration * fps; what the encoded file holds

    # inputs by storage key
    image_key: str | None = None
    image_size: tuple[int, int] | None = None
    audio_key: str | None = None
    audio_seconds: float | None = None

    # generation
    seeds: list[int]  # one per result
    seed_was_random: bool = False
    number_results: int = 1
    audio: bool = True  # a soundtrack in the output (generated, or the input track)
    prompt_extend: bool = True
    shot_type: Literal["single", "multi"] = "single"

    # output and delivery
    output_format: OutputFormat = "MP4"
    output_quality: int = 95
    output_type: Literal["URL"] = "URL"
    delivery_method: Literal["async"] = "async"
    ttl: int | None = None
    include_cost: bool = False
    cost: float = Field(ge=0)
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    safety_check: bool = False
    safety_mode: Literal["none", "fast", "full"] = "none"

    @property
    def mode(self) -> Literal["i2v", "t2v"]:
        return "i2v" if self.image_key else "t2v"


# -- what a finished task stores: one OutputRecord per result ------------------------------------


class PlannedShot(BaseModel):
    """One shot of a multi-shot plan, as promptExtend reported it (``Shot.to_dict``)."""

    model_config = ConfigDict(frozen=True)

    duration: int | float
    prompt: str
    transition: str


class PromptExtension(BaseModel):
    """What promptExtend did for a task. ``prompt`` is what was generated from (the original prompt
    when ``extended`` is false: no backend, or it failed, ``note`` says why); ``shots`` is the
    multi-shot plan (None for ``single``). Sent as ``extendedPrompt``/``promptExtended``."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    shots: list[PlannedShot] | None = None
    backend: str
    extended: bool
    note: str | None = None


def _stored_as(key: str, *default: Any) -> Any:
    """A field read and written under ``key`` in the stored JSON, built by its Python name."""
    return Field(*default, validation_alias=key, serialization_alias=key)


class OutputRecord(BaseModel):
    """One stored result of a succeeded task: what the worker writes and ``getResponse``/webhooks read.

    Stored as JSON in the task row under the wire-style keys (``videoUUID``, ``bytes``,
    ``promptExtend``, ``NSFWContent``), the format rows have had from the start, so rows written
    before this model existed read unchanged. ``prompt_extend`` and ``nsfw_content`` are absent
    (None) when the request did not ask for them.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    video_uuid: str = _stored_as("videoUUID")
    seed: int
    key: str  # storage key of the encoded file, outputs/{taskUUID}/{i}.{ext}
    format: OutputFormat
    width: int
    height: int
    frames: int
    fps: float
    duration: float
    audio: bool  # the file has an audio stream
    size_bytes: int = _stored_as("bytes")
    prompt_extend: PromptExtension | None = _stored_as("promptExtend", None)
    nsfw_content: bool | None = _stored_as("NSFWContent", None)

    def stored(self) -> dict[str, Any]:
        """The JSON object stored for this result (absent optional keys are left out, as before)."""
        out = self.model_dump(mode="json", by_alias=True)
        for k in ("promptExtend", "NSFWContent"):
            if out[k] is None:
                del out[k]
        return out


_RESULTS = TypeAdapter(list[OutputRecord])


def dump_results(results: Sequence[OutputRecord]) -> str:
    """The ``results`` column of a succeeded task."""
    return json.dumps([r.stored() for r in results])


def load_results(text: str | None) -> list[OutputRecord] | None:
    """The ``results`` column read back (None for a task that has none)."""
    return _RESULTS.validate_json(text) if text else None

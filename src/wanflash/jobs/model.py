"""The job specification and task states: plain data shared by the API, the store and workers.

A :class:`JobSpec` is the only thing that crosses the queue. It is JSON, fully resolved
(sizes, frame counts, seeds, cost) and refers to inputs by storage key, never inline bytes.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["MP4", "WEBM", "MOV"]


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

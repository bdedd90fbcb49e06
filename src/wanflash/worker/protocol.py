"""Messages between the supervisor (parent) and the process that renders (executor child, group leader).

Typed, picklable pydantic models, no torch; a closed set, like cog's worker events:
:data:`ToChild` is everything the parent sends, :data:`FromChild` everything it can receive, and
code that dispatches on them matches every member (``assert_never`` on the rest). The child never
sees the database: it gets a :class:`RunJob` with the spec (JSON) and local file paths, and
answers with exactly one :data:`Outcome` (:class:`Done`, :class:`Failed` or :class:`Cancelled`)
for that task, after any number of :class:`Progress` messages. Media bytes never cross the pipe:
the child writes the encoded files into ``out_dir`` and :class:`Done` lists their paths, with
what promptExtend did, the content check's report and the GPU memory as typed fields.

:class:`ExecutorState` is what an executor reports (health, ``/metrics``).
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wanflash.jobs.model import OutputFormat, PromptExtension


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutorState(enum.StrEnum):
    STOPPED = "stopped"  # not started, or stopped
    LOADING = "loading"  # the model is loading
    READY = "ready"  # loaded; jobs run
    FAILED = "failed"  # the model failed to load
    DEAD = "dead"  # the child exited; the next job starts a new one


# -- parent -> child


class RunJob(_Message):
    task_uuid: str
    attempt: int
    spec_json: str
    out_dir: str
    image_path: str | None = None
    audio_path: str | None = None


class Cancel(_Message):
    task_uuid: str


class Shutdown(_Message):
    pass


# -- child -> parent


class Ready(_Message):
    pipeline: str
    load_seconds: float


class LoadFailed(_Message):
    message: str


class Progress(_Message):
    task_uuid: str
    step: int
    total: int
    stage: str


class OutputFile(_Message):
    index: int
    path: str
    seed: int
    fmt: OutputFormat


class SafetyResult(_Message):
    """The content check of one result."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    nsfw_content: bool = Field(validation_alias="NSFWContent")
    frames_checked: int = Field(validation_alias="framesChecked")
    flagged_frames: list[int] = Field(validation_alias="flaggedFrames")


class SafetyReport(_Message):
    """What the content check did (``SafetyRun.finish``): per result, in result order."""

    mode: Literal["fast", "full"]
    detector: str
    withhold: bool
    input: bool | None  # the input image's flag (None: no input image)
    results: list[SafetyResult]


class GpuMemory(_Message):
    """CUDA memory of the rendering process after a job, in bytes (``memory_stats()``), for ``/metrics``."""

    device: str
    allocated: int
    reserved: int
    peak_allocated: int
    device_used: int
    device_total: int


class Done(_Message):
    task_uuid: str
    outputs: list[OutputFile]
    prompt_extend: PromptExtension | None = None  # None: promptExtend was off
    safety: SafetyReport | None = None  # None: no content check was asked for
    gpu_memory: GpuMemory | None = None  # None: not on a GPU
    # The pipeline's own report (generation size, clips, shots, audio model): diagnostics for logs
    # and tests. Nothing downstream reads it; what the service uses has a typed field above.
    pipeline_info: dict[str, Any] = Field(default_factory=dict)


class Failed(_Message):
    task_uuid: str
    code: str
    message: str
    retryable: bool = False


class Cancelled(_Message):
    task_uuid: str


ToChild = RunJob | Cancel | Shutdown
Outcome = Done | Failed | Cancelled
FromChild = Ready | LoadFailed | Progress | Done | Failed | Cancelled

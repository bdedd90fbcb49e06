"""Messages between the supervisor (parent) and the executor child, over a multiprocessing pipe.

Plain picklable dataclasses, no torch. The child never sees the database: it gets a
:class:`RunJob` with the spec (JSON) and local file paths, and answers with exactly one of
:class:`Done`, :class:`Failed` or :class:`Cancelled` for that task, after any number of
:class:`Progress` messages. Media bytes never cross the pipe: the child writes the encoded
files into ``out_dir`` and :class:`Done` lists their paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunJob:
    task_uuid: str
    attempt: int
    spec_json: str
    out_dir: str
    image_path: str | None = None
    audio_path: str | None = None


@dataclass(frozen=True)
class Cancel:
    task_uuid: str


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Ready:
    pipeline: str
    load_seconds: float


@dataclass(frozen=True)
class LoadFailed:
    message: str


@dataclass(frozen=True)
class Progress:
    task_uuid: str
    step: int
    total: int
    stage: str


@dataclass(frozen=True)
class OutputFile:
    index: int
    path: str
    seed: int
    fmt: str


@dataclass(frozen=True)
class Done:
    task_uuid: str
    outputs: list[OutputFile]
    info: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    task_uuid: str
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class Cancelled:
    task_uuid: str

"""Error taxonomy shared by every layer.

``InvalidRequest`` carries Runware-shaped error items and is never retried. ``JobFailed`` says
whether a retry may help. ``JobCancelled`` is raised from the step callback to stop a run
before the VAE decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunwareError:
    """One item of Runware's ``errors`` array."""

    code: str
    message: str
    parameter: str | None = None
    task_type: str | None = None
    task_uuid: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            out["parameter"] = self.parameter
        if self.task_type is not None:
            out["taskType"] = self.task_type
        if self.task_uuid is not None:
            out["taskUUID"] = self.task_uuid
        return out


class WanflashError(Exception):
    """Base class."""


@dataclass
class InvalidRequest(WanflashError):
    """The request is wrong; answer 400 with these errors and never retry."""

    errors: list[RunwareError] = field(default_factory=list)
    status: int = 400

    def __str__(self) -> str:
        return "; ".join(f"{e.parameter or '-'}: {e.message}" for e in self.errors)


class JobFailed(WanflashError):
    """A job failed. ``retryable`` says whether running it again may succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobCancelled(WanflashError):
    """Raised inside a run (from the step callback) when the task was cancelled."""


class ExecutorDead(WanflashError):
    """The executor process died; it is restarted and the job re-queued."""


class ServiceOverloaded(WanflashError):
    """Admission control: answer 429/503 with Retry-After."""

    def __init__(self, message: str, retry_after: float = 1.0, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status

"""Task row -> the Runware items a client sees (the ``getResponse`` contract, protocol §3.3).

* Not finished: ``numberResults`` items ``{"taskType":"videoInference","taskUUID":T,"status":"processing"}``
  with no ``videoUUID``/``videoURL`` (clients would take those as done), plus ``progress``
  (percent), ``stage``, ``progressStep`` and ``progressTotal`` while running.
* Succeeded: all N items together, each with ``status":"success"``, its own ``videoUUID``,
  a signed ``videoURL``, its ``seed``, and ``cost`` (the task cost split evenly) when the
  request had ``includeCost``. The same items (same UUIDs, same URL) on every later poll.
* Failed or cancelled: one Runware error item carrying the taskUUID and ``taskType``. The poll
  itself succeeded, so its REST status is 200 (a 5xx would make clients retry a poll whose answer
  will never change, and report the server as broken); only an unknown taskUUID is a 404.

The URL expires ``ttl`` seconds (or the default) after the task finished, so repeated polls
return the identical link.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wanflash.errors import RunwareError
from wanflash.jobs.model import TaskState
from wanflash.jobs.store import TaskRecord

TASK_TYPE = "videoInference"

SignUrl = Callable[[str, float], str]  # (storage key, expires_at) -> absolute URL


@dataclass
class PollReply:
    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


def not_found(task_uuid: str, task_type: str = TASK_TYPE) -> PollReply:
    err = RunwareError("taskFailedOrNotFound", f"No task with taskUUID '{task_uuid}' was found.",
                       parameter="taskUUID", task_type=task_type, task_uuid=task_uuid)
    return PollReply(errors=[err.to_wire()], status=404)


def expires_at(record: TaskRecord, default_ttl: int) -> float:
    finished = record.finished or record.created
    return finished + (record.spec.ttl or default_ttl)


def poll_reply(record: TaskRecord, sign_url: SignUrl, *, default_ttl: int) -> PollReply:
    spec = record.spec
    tu = record.task_uuid
    n = spec.number_results
    if record.state in (TaskState.QUEUED, TaskState.RUNNING):
        item: dict[str, Any] = {"taskType": TASK_TYPE, "taskUUID": tu, "status": "processing"}
        if record.state is TaskState.RUNNING and record.progress_total:
            item["progress"] = round(100.0 * record.progress_step / record.progress_total, 1)
            item["stage"] = record.progress_stage
            # Extra fields (the SDKs ignore unknown keys): the step counts behind "progress".
            item["progressStep"] = record.progress_step
            item["progressTotal"] = record.progress_total
        return PollReply(data=[dict(item) for _ in range(n)])
    if record.state is TaskState.SUCCEEDED:
        exp = expires_at(record, default_ttl)
        items = []
        for r in record.results or []:
            out: dict[str, Any] = {
                "taskType": TASK_TYPE,
                "taskUUID": tu,
                "status": "success",
                "videoUUID": r.video_uuid,
                "videoURL": sign_url(r.key, exp),
                "seed": r.seed,
            }
            if spec.include_cost:
                out["cost"] = round(spec.cost / max(1, n), 6)
            if r.prompt_extend is not None:
                # Extra field (the SDKs ignore unknown keys): the prompt actually generated from,
                # and whether an extender rewrote it (false: no backend, or it failed).
                out["extendedPrompt"] = r.prompt_extend.prompt
                out["promptExtended"] = r.prompt_extend.extended
            if r.nsfw_content is not None:  # only when the request asked for a content check and it ran
                out["NSFWContent"] = r.nsfw_content
            items.append(out)
        return PollReply(data=items)
    code = record.error_code or ("taskCancelled" if record.state is TaskState.CANCELLED else "inferenceError")
    message = record.error_message or "The task failed."
    err = RunwareError(code, message, task_type=TASK_TYPE, task_uuid=tu)
    return PollReply(errors=[err.to_wire()], status=200)

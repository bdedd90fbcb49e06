"""Tests' shortcut from a wire task to a planned :class:`JobSpec`: parse, resolve, plan, as the router does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from wanflash.contract.protocol import VideoInferenceTask
from wanflash.contract.validation import PlanProfile, ResolvedInputs, parse_video_task, plan_job
from wanflash.jobs.model import JobSpec

Resolver = Callable[[VideoInferenceTask], ResolvedInputs]


def validate_video_task(raw: Mapping[str, Any], *, profile: PlanProfile, resolve: Resolver | None = None,
                        native_audio: bool = True) -> JobSpec:
    """Raises :class:`~wanflash.errors.InvalidRequest` with Runware-shaped errors naming each bad parameter."""
    task = parse_video_task(raw, native_audio=native_audio)
    inputs = resolve(task) if resolve is not None else ResolvedInputs()
    return plan_job(task, profile=profile, inputs=inputs)

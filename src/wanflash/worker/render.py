"""The one render path: a job from its spec and input files to encoded videos and a :class:`Done`.

prepare (spec, start image) → input safety → promptExtend → shot plan → generate → output safety
→ encode. A :class:`Renderer` holds what that needs, built ONCE per process by
:meth:`Renderer.from_settings` (the only place the pipeline, the prompt extender and the content
checker are built): the subprocess executor's child and the in-process executor host one, the
multi-GPU group leader wraps one (it broadcasts the :class:`Plan` to its ranks between
:meth:`~Renderer.prepare` and :meth:`~Renderer.generate`, and its followers run
:meth:`~Renderer.generate` on what they receive), and ``wanflash generate`` calls one. So a
request renders the same way in the service, in a worker group and on the command line.

Where new stages plug in:

* **A generation stage** (e.g. audio-to-video for requests with ``inputs.audio``): a
  :class:`Stage` (``accepts(plan)`` and ``run(pipeline, plan, on_step)``) in
  :data:`DEFAULT_STAGES`, ahead of the stages it should win over. :meth:`Renderer.generate` runs
  the first stage that accepts the plan, on every rank of a group alike; the :class:`Plan`
  carries what a stage may need (spec, start image, shot plan, input audio path).
* **A pipeline backend** (e.g. a native-audio model wrapping the video pipeline): the pipeline
  factory, :func:`wanflash.pipelines.registry.create_pipeline` by default, which
  :meth:`Renderer.from_settings` calls; every stage receives what it builds.
* **A check or report around generation**: :meth:`Renderer.prepare` (before, on the leader
  only) or :meth:`Renderer.finish` (after, before encoding), with a typed field on
  :class:`~wanflash.worker.protocol.Done` for anything the service must read.

Failures: :meth:`Renderer.render` raises :class:`JobCancelled` (from ``on_step``) or
:class:`JobFailed`; :meth:`Renderer.run` turns every outcome into a message. This module imports
torch only through the pipeline factory.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wanflash.errors import JobCancelled, JobFailed
from wanflash.jobs.model import JobSpec, PromptExtension
from wanflash.worker.protocol import (
    Cancelled,
    Done,
    Failed,
    GpuMemory,
    Outcome,
    OutputFile,
    RunJob,
    SafetyReport,
)

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.pipelines.base import AudioTrack, GenerationResult, VideoPipeline
    from wanflash.pipelines.prompt_extend import ExtendResult, PromptExtender
    from wanflash.pipelines.safety import ContentChecker, SafetyRun
    from wanflash.pipelines.shots import Shot

log = logging.getLogger(__name__)

OnStep = Callable[[int, int, str], None]
PipelineFactory = Callable[["Settings"], "VideoPipeline"]
DEFAULT_FACTORY = "wanflash.pipelines.registry:create_pipeline"


def resolve_factory(factory: PipelineFactory | str) -> PipelineFactory:
    """A callable, or a ``"package.module:attribute"`` string naming one."""
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    if not module or not attr:
        raise ValueError(f"pipeline factory must be 'module:attribute', got {factory!r}")
    obj = getattr(importlib.import_module(module), attr)
    if not callable(obj):
        raise TypeError(f"{factory!r} is not callable")
    return obj


# ------------------------------------------------------------------ what a stage gets


@dataclass(frozen=True)
class Plan:
    """What generation needs, once the leader has prepared the job: the spec to generate from
    (prompt already extended), the start image, the multi-shot plan (None for one continuous
    shot) and the input audio file. Picklable: a group leader broadcasts it to its ranks."""

    task_uuid: str
    spec: JobSpec
    image: Any = None  # PIL.Image.Image | None
    shots: list[Shot] | None = None
    audio_path: str | None = None


@dataclass
class Prepared:
    """A :class:`Plan` plus what only the preparing process keeps: what promptExtend did and the
    job's content check (the input image already checked)."""

    plan: Plan
    extension: ExtendResult | None
    safety: SafetyRun


class Stage(Protocol):
    """One way of generating a plan's videos; see the module docstring."""

    name: str

    def accepts(self, plan: Plan) -> bool: ...

    def run(self, pipeline: VideoPipeline, plan: Plan, on_step: OnStep) -> GenerationResult: ...


class MultiShotStage:
    """``shotType: "multi"``: the shot plan rendered shot by shot (:mod:`wanflash.pipelines.multishot`)."""

    name = "multishot"

    def accepts(self, plan: Plan) -> bool:
        return bool(plan.shots)

    def run(self, pipeline: VideoPipeline, plan: Plan, on_step: OnStep) -> GenerationResult:
        from wanflash.pipelines.multishot import render_shots

        return render_shots(pipeline, plan.spec, plan.shots or [], on_step, image=plan.image)


class SingleShotStage:
    """One continuous shot: the pipeline's own ``generate`` (accepts every plan: keep it last)."""

    name = "single"

    def accepts(self, plan: Plan) -> bool:
        return True

    def run(self, pipeline: VideoPipeline, plan: Plan, on_step: OnStep) -> GenerationResult:
        return pipeline.generate(plan.spec, on_step, image=plan.image)


class AudioToVideoStage:
    """``inputs.audio`` with a start image on a pipeline that ``hears_audio`` (the Wan2.2-S2V stage,
    :mod:`wanflash.pipelines.s2v`): the picture is rendered from the image, the prompt and the track.
    Multi-shot plans and pipelines without the stage keep the track as the soundtrack only."""

    name = "a2v"

    def accepts(self, plan: Plan) -> bool:
        return bool(plan.audio_path) and plan.image is not None and not plan.shots

    def run(self, pipeline: VideoPipeline, plan: Plan, on_step: OnStep) -> GenerationResult:
        if not getattr(pipeline, "hears_audio", False) or plan.audio_path is None:
            return pipeline.generate(plan.spec, on_step, image=plan.image)
        return pipeline.generate(plan.spec, on_step, image=plan.image,  # type: ignore[call-arg]
                                 audio=decode_audio(plan.audio_path))


DEFAULT_STAGES: tuple[Stage, ...] = (AudioToVideoStage(), MultiShotStage(), SingleShotStage())


# ------------------------------------------------------------------ the runner


class Renderer:
    """The pipeline, prompt extender and content checker of one process, and the job pipeline over them."""

    def __init__(self, pipeline: VideoPipeline, extender: PromptExtender | None = None,
                 checker: ContentChecker | None = None, stages: Sequence[Stage] = DEFAULT_STAGES) -> None:
        self.pipeline = pipeline
        self.extender = extender
        self.checker = checker
        self.stages = tuple(stages)

    @classmethod
    def from_settings(cls, settings: Settings, factory: PipelineFactory | str = DEFAULT_FACTORY, *,
                      generate_only: bool = False) -> Renderer:
        """Build and load the pipeline from ``factory``, and the configured prompt extender and content
        checker (``generate_only``: neither, for a group follower, which only generates)."""
        pipeline = resolve_factory(factory)(settings)
        pipeline.load()
        if generate_only:
            return cls(pipeline)
        from wanflash.pipelines.prompt_extend import create_extender
        from wanflash.pipelines.safety import create_checker

        return cls(pipeline, create_extender(settings.prompt_extend), create_checker(settings.safety))

    @property
    def name(self) -> str:
        return getattr(self.pipeline, "name", type(self.pipeline).__name__)

    # -- the stages of one job, in order

    def prepare(self, job: RunJob, on_step: OnStep) -> Prepared:
        """Read the spec and the start image, check the image (raises when withheld), apply
        promptExtend and make the shot plan."""
        from PIL import Image

        from wanflash.pipelines.safety import SafetyRun

        spec = JobSpec.model_validate_json(job.spec_json)
        image = None
        if job.image_path:
            with Image.open(job.image_path, formats=("PNG", "JPEG", "WEBP")) as im:  # what the API stores
                image = im.convert("RGB")
        safety = SafetyRun.start(self.checker, spec, image)
        spec, ext = self._extend_prompt(spec, image)
        plan = Plan(job.task_uuid, spec, image, _shot_plan(spec, ext), job.audio_path)
        return Prepared(plan, ext, safety)

    def generate(self, plan: Plan, on_step: OnStep) -> GenerationResult:
        """The videos of ``plan``, from the first stage that accepts it."""
        stage = next(s for s in self.stages if s.accepts(plan))
        return stage.run(self.pipeline, plan, on_step)

    def finish(self, job: RunJob, prepared: Prepared, result: GenerationResult, on_step: OnStep) -> Done:
        """Check the results (raises when withheld), encode them into ``job.out_dir`` with their
        soundtrack, and describe them."""
        from wanflash.formats import OUTPUT_FORMATS
        from wanflash.media.encode import encode_video

        spec = prepared.plan.spec
        if len(result.videos) != spec.number_results:
            raise JobFailed("inferenceError",
                            f"pipeline returned {len(result.videos)} videos, expected {spec.number_results}")
        safety = prepared.safety.finish(result.videos, fps=spec.fps, on_step=on_step)  # raises when withheld
        input_track = decode_audio(job.audio_path) if job.audio_path and spec.audio else None
        on_step(0, len(result.videos), "encode")
        outputs: list[OutputFile] = []
        for i, frames in enumerate(result.videos):
            track = result.audio[i] if i < len(result.audio) else None
            if track is None:
                track = input_track  # the request's own soundtrack when the pipeline made none
            path = Path(job.out_dir) / f"{i}{OUTPUT_FORMATS[spec.output_format].suffix}"
            encode_video(frames, path, fps=spec.fps, fmt=spec.output_format, quality=spec.output_quality,
                         audio=track if spec.audio else None)
            seed = result.seeds[i] if i < len(result.seeds) else spec.seeds[i]
            outputs.append(OutputFile(index=i, path=str(path), seed=int(seed), fmt=spec.output_format))
            on_step(i + 1, len(result.videos), "encode")
        ext = prepared.extension
        return Done(
            task_uuid=job.task_uuid, outputs=outputs,
            prompt_extend=PromptExtension.model_validate(ext.to_dict()) if ext is not None else None,
            safety=SafetyReport.model_validate(safety) if safety is not None else None,
            gpu_memory=self._gpu_memory(), pipeline_info=dict(result.info))

    def render(self, job: RunJob, on_step: OnStep) -> Done:
        """The whole job. Raises JobCancelled (from ``on_step``) or JobFailed."""
        prepared = self.prepare(job, on_step)
        result = self.generate(prepared.plan, on_step)
        return self.finish(job, prepared, result, on_step)

    def run(self, job: RunJob, on_step: OnStep) -> Outcome:
        """:meth:`render` with every outcome turned into a message (what crosses the pipe)."""
        return guarded(job, lambda: self.render(job, on_step))

    # -- helpers

    def _extend_prompt(self, spec: JobSpec, image: Any) -> tuple[JobSpec, ExtendResult | None]:
        """The spec to generate from, and what the extender did (None when promptExtend is off)."""
        if not spec.prompt_extend or self.extender is None:
            return spec, None
        ext = self.extender.extend(spec.positive_prompt, image=image, duration=spec.duration,
                                   shot_type=spec.shot_type)
        if not ext.extended:
            return spec, ext
        return spec.model_copy(update={"positive_prompt": ext.prompt}), ext

    def _gpu_memory(self) -> GpuMemory | None:
        """The pipeline's CUDA memory after this job (None on CPU), for /metrics."""
        memory_stats = getattr(self.pipeline, "memory_stats", None)
        stats = memory_stats() if callable(memory_stats) else None
        return GpuMemory.model_validate(stats) if stats else None


def _shot_plan(spec: JobSpec, ext: ExtendResult | None) -> list[Shot] | None:
    """The multi-shot plan to render, or None for one continuous shot. ``multi`` without an
    extender (promptExtend off upstream) gets the deterministic plan the passthrough extender gives."""
    if spec.shot_type != "multi":
        return None
    if ext is not None:
        return ext.shots
    from wanflash.pipelines.shots import ShotPlanError, fallback_shot_plan

    try:
        return fallback_shot_plan(spec.positive_prompt, spec.duration)
    except ShotPlanError:
        return None


def guarded(job: RunJob, work: Callable[[], Done]) -> Outcome:
    """Run ``work`` and turn every outcome into a message: Done, Cancelled or Failed."""
    try:
        return work()
    except JobCancelled:
        return Cancelled(task_uuid=job.task_uuid)
    except JobFailed as exc:
        return Failed(task_uuid=job.task_uuid, code=exc.code, message=exc.message, retryable=exc.retryable)
    except MemoryError as exc:
        return Failed(task_uuid=job.task_uuid, code="outOfMemory", message=f"out of memory: {exc}")
    except Exception as exc:  # a pipeline bug must fail the task, not kill the process hosting it
        log.exception("job %s failed", job.task_uuid)
        name = type(exc).__name__
        code = "outOfMemory" if "OutOfMemory" in name else "inferenceError"
        return Failed(task_uuid=job.task_uuid, code=code, message=f"{name}: {exc}")


def decode_audio(path: str) -> AudioTrack:
    """The whole track as float32 (channels, samples) at its native rate (decoded by :mod:`wanflash.media.decode`)."""
    from wanflash.media.decode import decode_audio_file
    from wanflash.media.track import AudioTrack

    samples, rate = decode_audio_file(path)
    return AudioTrack(samples=samples, rate=rate)

"""What runs next to the pipeline: render one job (generate + encode), and the child main loop.

:func:`render` is shared by both executors. It loads the inputs from local paths, calls
``pipeline.generate`` with a step callback, and encodes every result with
:func:`wanflash.media.encode.encode_video` into the job's ``out_dir``. When the request brought
its own audio track (``inputs.audio``) and the pipeline made none, that track is the soundtrack.
With ``promptExtend`` the prompt is first rewritten by the configured extender (which never
raises; without a backend the prompt passes through and the result says so); what was used is
returned in ``Done.info["promptExtend"]`` and stored on the task. ``shotType: "multi"`` renders
the extender's shot plan shot by shot (:mod:`wanflash.pipelines.multishot`). When the request
asks for a content check (:mod:`wanflash.pipelines.safety`), the input image is checked before
generation and the sampled frames before encoding; per-result flags go to ``Done.info["safety"]``,
and withheld content fails the job before anything is encoded.

:func:`child_main` is the entry point of the ``subprocess`` executor's spawned process: it
builds the pipeline once from the factory, ``load()``s it, reports :class:`Ready` (or
:class:`LoadFailed`), then serves :class:`RunJob` messages until :class:`Shutdown` or EOF. A
:class:`Cancel` for the running job is noticed at the next denoising step. This module imports
torch only through the factory, inside the child.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanflash.errors import JobCancelled, JobFailed
from wanflash.jobs.model import JobSpec
from wanflash.observability.logs import configure_logging, task_context
from wanflash.worker.protocol import (
    Cancel,
    Cancelled,
    Done,
    Failed,
    LoadFailed,
    OutputFile,
    Progress,
    Ready,
    RunJob,
    Shutdown,
)

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.pipelines.base import AudioTrack, GenerationResult, VideoPipeline
    from wanflash.pipelines.prompt_extend import ExtendResult, PromptExtender
    from wanflash.pipelines.safety import ContentChecker, SafetyRun
    from wanflash.pipelines.shots import Shot

log = logging.getLogger(__name__)

PipelineFactory = Callable[["Settings"], "VideoPipeline"]


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
    return obj  # type: ignore[no-any-return]


def decode_audio(path: str) -> "AudioTrack":
    """The whole track as float32 (channels, samples) at its native rate."""
    import av
    import numpy as np

    from wanflash.pipelines.base import AudioTrack

    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo" if stream.channels > 1 else "mono",
                                      rate=stream.rate)
        chunks: list[Any] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        samples = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((1, 0), np.float32)
        return AudioTrack(samples=samples, rate=int(stream.rate))


def extend_prompt(spec: JobSpec, image: Any, extender: "PromptExtender | None",
                  on_step: Callable[[int, int, str], None]) -> tuple[JobSpec, "ExtendResult | None"]:
    """Apply promptExtend: the spec to generate from, and what the extender did (None when off)."""
    if not spec.prompt_extend or extender is None:
        return spec, None
    ext = extender.extend(spec.positive_prompt, image=image, duration=spec.duration, shot_type=spec.shot_type)
    if not ext.extended:
        return spec, ext
    return spec.model_copy(update={"positive_prompt": ext.prompt}), ext


def shot_plan(spec: JobSpec, ext: "ExtendResult | None") -> "list[Shot] | None":
    """The multi-shot plan to render, or None for one continuous shot. ``multi`` without an
    extender (direct callers) gets the deterministic plan the passthrough extender would give."""
    if spec.shot_type != "multi":
        return None
    if ext is not None:
        return ext.shots
    from wanflash.pipelines.shots import ShotPlanError, fallback_shot_plan

    try:
        return fallback_shot_plan(spec.positive_prompt, spec.duration)
    except ShotPlanError:
        return None


def prepare(job: RunJob, extender: "PromptExtender | None", on_step: Callable[[int, int, str], None],
            checker: "ContentChecker | None" = None) -> tuple[JobSpec, Any, "ExtendResult | None", "SafetyRun"]:
    """The spec to generate from (prompt extended), the start image, the promptExtend result, and the
    safety run (the input image is checked here, before any generation; raises when withheld)."""
    from PIL import Image

    from wanflash.pipelines.safety import SafetyRun

    spec = JobSpec.model_validate_json(job.spec_json)
    image = None
    if job.image_path:
        with Image.open(job.image_path, formats=("PNG", "JPEG", "WEBP")) as im:  # what the API stores
            image = im.convert("RGB")
    safety = SafetyRun.start(checker, spec, image)
    spec, ext = extend_prompt(spec, image, extender, on_step)
    return spec, image, ext, safety


def generate(pipeline: "VideoPipeline", spec: JobSpec, shots: "list[Shot] | None",
             on_step: Callable[[int, int, str], None], *, image: Any) -> "GenerationResult":
    """One continuous shot, or the multi-shot plan rendered shot by shot."""
    if shots:
        from wanflash.pipelines.multishot import render_shots

        return render_shots(pipeline, spec, shots, on_step, image=image)
    return pipeline.generate(spec, on_step, image=image)


def render(pipeline: "VideoPipeline", job: RunJob, on_step: Callable[[int, int, str], None],
           extender: "PromptExtender | None" = None, checker: "ContentChecker | None" = None) -> Done:
    """Generate and encode one job. Raises JobCancelled (from ``on_step``) or JobFailed."""
    spec, image, ext, safety = prepare(job, extender, on_step, checker)
    result = generate(pipeline, spec, shot_plan(spec, ext), on_step, image=image)
    return with_memory_stats(encode_result(job, spec, result, ext, safety, on_step), pipeline)


def encode_result(job: RunJob, spec: JobSpec, result: "GenerationResult", ext: "ExtendResult | None",
                  safety: "SafetyRun", on_step: Callable[[int, int, str], None]) -> Done:
    """Check (safety) and encode every video of ``result`` into ``job.out_dir`` (with its soundtrack)
    and describe them."""
    from wanflash.media.encode import SUFFIXES, encode_video

    if len(result.videos) != spec.number_results:
        raise JobFailed("inferenceError",
                        f"pipeline returned {len(result.videos)} videos, expected {spec.number_results}")
    safety_info = safety.finish(result.videos, fps=spec.fps, on_step=on_step)  # raises when withheld
    input_track = decode_audio(job.audio_path) if job.audio_path and spec.audio else None
    on_step(0, len(result.videos), "encode")
    outputs: list[OutputFile] = []
    out_dir = Path(job.out_dir)
    for i, frames in enumerate(result.videos):
        track = result.audio[i] if i < len(result.audio) else None
        if track is None:
            track = input_track
        path = out_dir / f"{i}{SUFFIXES[spec.output_format]}"
        encode_video(frames, path, fps=spec.fps, fmt=spec.output_format, quality=spec.output_quality,
                     audio=track if spec.audio else None)
        seed = result.seeds[i] if i < len(result.seeds) else spec.seeds[i]
        outputs.append(OutputFile(index=i, path=str(path), seed=int(seed), fmt=spec.output_format))
        on_step(i + 1, len(result.videos), "encode")
    info = dict(result.info)
    if ext is not None:
        info["promptExtend"] = ext.to_dict()
    if safety_info is not None:
        info["safety"] = safety_info
    return Done(task_uuid=job.task_uuid, outputs=outputs, info=info)


def with_memory_stats(done: Done, pipeline: Any) -> Done:
    """Add the pipeline's CUDA memory after this job (``{}`` on CPU) to ``done.info``, for /metrics."""
    memory_stats = getattr(pipeline, "memory_stats", None)
    stats = memory_stats() if callable(memory_stats) else None
    if stats:
        done.info["gpu_memory"] = stats
    return done


def run_safely(pipeline: "VideoPipeline", job: RunJob, on_step: Callable[[int, int, str], None],
               extender: "PromptExtender | None" = None,
               checker: "ContentChecker | None" = None) -> Done | Failed | Cancelled:
    """:func:`render` with every outcome turned into a message (what crosses the pipe)."""
    return guarded(job, lambda: render(pipeline, job, on_step, extender, checker))


def guarded(job: RunJob, work: Callable[[], Done]) -> Done | Failed | Cancelled:
    """Run ``work`` and turn every outcome into a message: Done, Cancelled or Failed."""
    try:
        return work()
    except JobCancelled:
        return Cancelled(job.task_uuid)
    except JobFailed as exc:
        return Failed(job.task_uuid, exc.code, exc.message, exc.retryable)
    except MemoryError as exc:
        return Failed(job.task_uuid, "outOfMemory", f"out of memory: {exc}", False)
    except Exception as exc:  # a pipeline bug must fail the task, not kill the child
        log.exception("job %s failed", job.task_uuid)
        name = type(exc).__name__
        code = "outOfMemory" if "OutOfMemory" in name else "inferenceError"
        return Failed(job.task_uuid, code, f"{name}: {exc}", False)


def exit_with_parent(poll_s: float = 0.5) -> threading.Thread:
    """Exit this process at once when its parent dies, even mid-render or mid-load.

    The pipe's EOF is only seen between jobs; a parent killed with SIGKILL would leave the child
    rendering (on a GPU, beside the new executor the restarted service starts). A daemon thread
    waits on multiprocessing's parent sentinel (readable when the parent is gone), or polls the
    parent pid where there is none, and then ``os._exit``s."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    ppid = os.getppid()

    def watch() -> None:
        if sentinel is not None:
            multiprocessing.connection.wait([sentinel])
        else:
            while os.getppid() == ppid:
                time.sleep(poll_s)
        os._exit(1)

    t = threading.Thread(target=watch, name="wanflash-parent-watch", daemon=True)
    t.start()
    return t


def child_main(conn: Connection, factory: PipelineFactory | str, settings: "Settings") -> None:
    """Entry point of the executor child (multiprocessing spawn)."""
    exit_with_parent()
    configure_logging(json_lines=settings.log_json, process_label="child")
    t0 = time.monotonic()
    try:
        from wanflash.pipelines.prompt_extend import create_extender
        from wanflash.pipelines.safety import create_checker

        pipeline = resolve_factory(factory)(settings)
        pipeline.load()
        extender = create_extender(settings)
        checker = create_checker(settings)
    except Exception as exc:
        log.exception("pipeline load failed")
        conn.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(getattr(pipeline, "name", type(pipeline).__name__), time.monotonic() - t0))

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(msg, Shutdown):
            return
        if not isinstance(msg, RunJob):
            continue  # a Cancel for a job that already finished
        job = msg
        last_sent = 0.0
        last_stage = ""

        def on_step(step: int, total: int, stage: str, job: RunJob = job) -> None:
            nonlocal last_sent, last_stage
            # Drain control messages without blocking: a Cancel for this job stops the run here.
            while conn.poll():
                ctl = conn.recv()
                if isinstance(ctl, Cancel) and ctl.task_uuid == job.task_uuid:
                    raise JobCancelled(job.task_uuid)
                if isinstance(ctl, Shutdown):
                    raise SystemExit(0)
            now = time.monotonic()
            # The supervisor stores ~1 write/s; more messages than that only cost pipe traffic. A new
            # stage is always sent: the supervisor times the stages from these messages.
            if now - last_sent >= 0.2 or step == total or stage != last_stage:
                last_sent, last_stage = now, stage
                conn.send(Progress(job.task_uuid, step, total, stage))

        with task_context(job.task_uuid):
            conn.send(run_safely(pipeline, job, on_step, extender, checker))

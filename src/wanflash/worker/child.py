"""The entry point of the ``subprocess`` executor's spawned process.

:func:`child_main` builds the :class:`~wanflash.worker.render.Renderer` once (pipeline loaded,
prompt extender and content checker), reports :class:`Ready` (or :class:`LoadFailed`), then serves
:class:`RunJob` messages until :class:`Shutdown` or EOF, answering each with progress and one
outcome (:mod:`wanflash.worker.protocol`). A :class:`Cancel` for the running job is noticed at
the next denoising step; the child exits at once when its parent dies. The render path itself
lives in :mod:`wanflash.worker.render`; this module imports torch only through the pipeline
factory, inside the child.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from wanflash.errors import JobCancelled
from wanflash.observability.logs import task_context
from wanflash.worker.bootstrap import bootstrap_process
from wanflash.worker.protocol import Cancel, LoadFailed, Progress, Ready, RunJob, Shutdown
from wanflash.worker.render import PipelineFactory, Renderer

if TYPE_CHECKING:
    from wanflash.config import Settings

log = logging.getLogger(__name__)


def child_main(conn: Connection, factory: PipelineFactory | str, settings: Settings) -> None:
    """Entry point of the executor child (multiprocessing spawn)."""
    # Exit at once when the parent dies, even mid-render or mid-load: the pipe's EOF is only seen
    # between jobs, and a child left rendering would hold the GPU beside the restarted service's.
    bootstrap_process(settings, label="child", parent_pid=os.getppid())
    t0 = time.monotonic()
    try:
        renderer = Renderer.from_settings(settings, factory)
    except Exception as exc:
        log.exception("pipeline load failed")
        conn.send(LoadFailed(message=f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(pipeline=renderer.name, load_seconds=time.monotonic() - t0))

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
                conn.send(Progress(task_uuid=job.task_uuid, step=step, total=total, stage=stage))

        with task_context(job.task_uuid):
            conn.send(renderer.run(job, on_step))

"""A benchmark server process: what ``wanflash serve`` runs, with an optional *instant* worker.

    python bench/_serve.py --port P --data-dir D [--instant DIR] [--report status.json] [--timers t.json]
                           [--set NAME=VALUE ...]

Settings come from :func:`wanflash.config.load_settings` (so ``WANFLASH_*`` apply) with the
``--set`` overrides on top, printed at start-up, so a benchmark states exactly how the server
was configured. The app is ``wanflash.compose.build_app`` under uvicorn with ``uvicorn_config_kwargs``, as in
:mod:`wanflash.api.server`.

``--instant DIR`` replaces the executor with :class:`InstantExecutor`: each job "finishes" at
once with a pre-encoded clip of the requested size, frame count and format, copied from ``DIR``
into the job's output directory (:func:`clip_path` names it; :func:`make_clip` makes one, which the
benchmark does in its own process, so the encoder's buffers never count in this process's RSS).
The supervisor then probes, stores and completes it exactly as it does a real output. Nothing
here imports torch, so the process's RSS is the API's (plus the embedded supervisor).

On SIGTERM/SIGINT the server shuts down and ``--report`` (if given) receives JSON saying
whether ``torch``/``diffusers`` were imported in this process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any


def clip_path(clip_dir: Path, width: int, height: int, frames: int, fps: int, fmt: str) -> Path:
    from wanflash.formats import OUTPUT_FORMATS

    return Path(clip_dir) / f"{width}x{height}x{frames}@{fps}{OUTPUT_FORMATS[fmt].suffix}"


def make_clip(clip_dir: Path, width: int, height: int, frames: int, fps: int, fmt: str) -> Path:
    """A flat grey clip of that shape, encoded with the service's encoder."""
    import numpy as np

    from wanflash.media.encode import encode_video

    path = clip_path(clip_dir, width, height, frames, fps, fmt)
    # One frame repeated (a zero-stride view): no frames x height x width buffer.
    video = np.broadcast_to(np.full((height, width, 3), 96, dtype=np.uint8), (frames, height, width, 3))
    encode_video(video, path, fps=fps, fmt=fmt, quality=60)
    return path


class InstantExecutor:
    """An ``Executor`` (see :mod:`wanflash.worker.executor`) whose jobs complete immediately."""

    name = "instant"

    def __init__(self, clip_dir: Path) -> None:
        self.clip_dir = clip_dir

    @property
    def state(self) -> str:
        return "ready"

    def start(self) -> None:
        # Imported now, not by the first job: a first import under load holds the GIL.
        import wanflash.media.encode  # noqa: F401
        import wanflash.worker.protocol  # noqa: F401

    async def wait_ready(self) -> None:
        pass

    async def run(self, job: Any, on_progress: Any) -> Any:
        from wanflash.errors import JobFailed
        from wanflash.formats import OUTPUT_FORMATS
        from wanflash.jobs.model import JobSpec
        from wanflash.worker.protocol import Done, OutputFile

        spec = JobSpec.model_validate_json(job.spec_json)
        src = clip_path(self.clip_dir, spec.width, spec.height, spec.num_frames, spec.fps, spec.output_format)
        if not src.is_file():
            raise JobFailed("inferenceError", f"no pre-encoded clip {src.name} for the instant executor")
        outputs = []
        for i, seed in enumerate(spec.seeds):
            dst = Path(job.out_dir) / f"{i}{OUTPUT_FORMATS[spec.output_format].suffix}"
            shutil.copyfile(src, dst)
            outputs.append(OutputFile(index=i, path=str(dst), seed=seed, fmt=spec.output_format))
        return Done(task_uuid=job.task_uuid, outputs=outputs, info={})

    def cancel(self, task_uuid: str) -> None:
        pass

    async def restart(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--instant", default=None, metavar="CLIP_DIR",
                    help="jobs complete at once with clips from CLIP_DIR (no model, no torch)")
    ap.add_argument("--report", default=None, help="write {torch_imported, ...} here on shutdown")
    ap.add_argument("--timers", default=None, metavar="FILE",
                    help="time the submit/poll layers and the loop lag, write them here on shutdown (_timers.py)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a Settings override, e.g. --set rate_limit_per_s=1000 (JSON values)")
    args = ap.parse_args()

    import uvicorn

    from wanflash.api.server import uvicorn_config_kwargs
    from wanflash.compose import build_app
    from wanflash.config import load_settings

    overrides: dict[str, object] = {"port": args.port, "data_dir": args.data_dir, "host": "127.0.0.1"}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = _value(value)
    settings = load_settings(**overrides)
    print("settings: " + json.dumps({k: str(getattr(settings, k)) for k in sorted(overrides)}), flush=True)
    executor = InstantExecutor(Path(args.instant)) if args.instant else None
    timers = None
    if args.timers:
        from _timers import Timers

        timers = Timers()
        timers.install()
    app = build_app(settings, executor=executor)  # type: ignore[arg-type]
    if timers is not None:
        app = timers.asgi(app)
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level="warning",
                            **uvicorn_config_kwargs(settings))  # type: ignore[arg-type]
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into SystemExit so the
    # report below is still written.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    try:
        uvicorn.Server(config).run()
    except SystemExit:
        pass
    if timers is not None:
        timers.write(args.timers)
    if args.report:
        Path(args.report).write_text(json.dumps({
            "torch_imported": "torch" in sys.modules,
            "diffusers_imported": "diffusers" in sys.modules,
            "modules": len(sys.modules),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``wanflash generate``: one request through validation, the engine and the encoder, no server.

The command builds the same wire task a client would send, so it is checked by the same
:func:`~wanflash.contract.validation.parse_video_task` and planned by the same
:func:`~wanflash.contract.validation.plan_job`; a bad flag prints Runware's error naming the
parameter and exits 2. It renders through the service's own
:class:`~wanflash.worker.render.Renderer` (input check, promptExtend, multi-shot plan, output
check, encode), so a request comes out the same here as from a worker; a failed job prints its
code and message and exits 1. Every output is probed before the command reports success.
"""

from __future__ import annotations

import argparse
import functools
import io
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wanflash import MODEL_ID
from wanflash.errors import InvalidRequest, JobCancelled, JobFailed

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import LimitsConfig, Settings


def build_task(args: argparse.Namespace) -> dict[str, Any]:
    """The wire ``videoInference`` task the flags describe (unset flags are left out)."""
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": str(uuid.uuid4()),
        "model": MODEL_ID,
        "positivePrompt": args.prompt,
    }
    optional = {
        "negativePrompt": args.negative_prompt,
        "duration": args.duration,
        "resolution": args.resolution,
        "width": args.width,
        "height": args.height,
        "outputFormat": args.format.upper() if args.format else None,
        "outputQuality": args.quality,
        "seed": args.seed,
        "numberResults": args.number_results,
    }
    task.update({k: v for k, v in optional.items() if v is not None})
    if args.image:
        task["inputs"] = {"frameImages": [{"image": args.image, "frame": "first"}]}
    alibaba: dict[str, Any] = {}
    if args.no_audio:
        alibaba["audio"] = False
    if args.no_prompt_extend:
        alibaba["promptExtend"] = False
    if args.shot_type:
        alibaba["shotType"] = args.shot_type
    if alibaba:
        task["providerSettings"] = {"alibaba": alibaba}
    if args.safety:
        task["safety"] = {"checkContent": True, "mode": args.safety}
    return task


def load_image(ref: str, limits: LimitsConfig) -> Image.Image:
    """A local path or an http(s) URL, decoded and size-checked."""
    from PIL import Image

    if ref.lower().startswith(("http://", "https://")):
        import httpx

        resp = httpx.get(ref, timeout=limits.fetch_timeout_seconds, follow_redirects=True)
        resp.raise_for_status()
        if len(resp.content) > limits.max_input_bytes:
            raise ValueError(f"image at {ref} is larger than {limits.max_input_bytes} bytes")
        data = resp.content
    else:
        data = Path(ref).expanduser().read_bytes()
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > limits.max_image_pixels:
        raise ValueError(f"image is {img.width}x{img.height}, more than {limits.max_image_pixels} pixels")
    img.load()
    return img.convert("RGB")


class StageBars:
    """``on_step`` as progress bars on ``stream`` (tqdm): one bar per stage (denoise, encode)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.bar: Any = None
        self.stage: str | None = None

    def __call__(self, step: int, total: int, stage: str) -> None:
        from tqdm import tqdm

        if self.bar is None or stage != self.stage or total != self.bar.total:
            self.close()
            self.bar = tqdm(total=total, desc=stage, unit="step", file=self.stream, mininterval=0.2)
            self.stage = stage
        self.bar.update(step - self.bar.n)
        if step >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def output_paths(output: Path, n: int) -> list[Path]:
    """``out.mp4`` for one result; ``out-1.mp4``, ``out-2.mp4`` ... for several."""
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, n + 1)]


def generate_cli(settings: Settings, args: argparse.Namespace) -> int:
    from wanflash.contract.validation import (
        ResolvedInputs,
        parse_video_task,
        plan_job,
        requested_safety_mode,
        unsupported_safety,
    )
    from wanflash.pipelines.profiles import get_profile

    err = sys.stderr
    task = build_task(args)
    try:
        parsed = parse_video_task(task, native_audio=settings.audio.model != "none")
        if settings.safety.detector == "none" and requested_safety_mode(parsed) != "none":
            raise InvalidRequest([unsupported_safety(
                parsed, "this machine has no content detector configured (WANFLASH_SAFETY_DETECTOR)")])
    except InvalidRequest as exc:
        for e in exc.errors:
            print(f"error: {e.parameter or '-'}: {e.message} ({e.code})", file=err)
        return 2

    image = None
    if args.image:
        try:
            image = load_image(args.image, settings.limits)
        except Exception as exc:  # any unreadable input is the caller's error, named by parameter
            print(f"error: inputs.frameImages: cannot read image {args.image!r}: {exc}", file=err)
            return 2
    profile = get_profile(settings.engine.profile)
    inputs = ResolvedInputs(image_key=args.image, image_size=image.size if image else None)
    spec = plan_job(parsed, profile=profile, inputs=inputs)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"{spec.width}x{spec.height}, {spec.duration}s at {spec.fps} fps ({spec.num_frames} frames), "
          f"{spec.output_format}, profile {profile.name}", file=err)

    from wanflash.media.probe import probe_file
    from wanflash.pipelines.registry import create_pipeline
    from wanflash.worker.protocol import RunJob
    from wanflash.worker.render import Renderer

    t0 = time.monotonic()
    factory = args.pipeline_factory or functools.partial(create_pipeline, progress=True)
    renderer = Renderer.from_settings(settings, factory)  # the service's render path, built the same way
    print(f"loaded {profile.name} in {time.monotonic() - t0:.1f}s", file=err)
    bars = StageBars(err)
    with tempfile.TemporaryDirectory(prefix="wanflash-generate-") as tmp:
        image_path = None
        if image is not None:
            image_path = str(Path(tmp) / "image.png")  # the render path reads inputs from files, as in a worker
            image.save(image_path)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        job = RunJob(task_uuid=spec.task_uuid, attempt=1, spec_json=spec.model_dump_json(), out_dir=str(out_dir),
                     image_path=image_path)
        try:
            done = renderer.render(job, bars)
        except JobCancelled:
            bars.close()
            print("cancelled", file=err)
            return 130
        except JobFailed as exc:
            bars.close()
            print(f"error: {exc.code}: {exc.message}", file=err)
            return 1
        if done.prompt_extend is not None:
            pe = done.prompt_extend
            how = "extended" if pe.extended else f"not extended ({pe.note or pe.backend})"
            print(f"promptExtend ({pe.backend}): {how}: {pe.prompt}", file=err)
        paths = output_paths(output, len(done.outputs))
        for out, path in zip(sorted(done.outputs, key=lambda o: o.index), paths):
            shutil.move(out.path, path)
            info = probe_file(path)
            if (info.width, info.height) != (spec.width, spec.height) or abs(info.frames - spec.num_frames) > 1:
                print(f"error: {path} probes as {info.width}x{info.height}, {info.frames} frames; expected "
                      f"{spec.width}x{spec.height}, {spec.num_frames}", file=err)
                return 1
            nsfw = ""
            if done.safety is not None:
                nsfw = f", NSFWContent {str(done.safety.results[out.index].nsfw_content).lower()}"
            print(f"seed {out.seed}: {path} ({info.video_codec}, {info.width}x{info.height}, {info.fps:g} fps, "
                  f"{info.duration:.2f}s, {info.size_bytes} bytes{nsfw})")
    print(f"done in {time.monotonic() - t0:.1f}s", file=err)
    return 0

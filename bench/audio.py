"""Native-audio stage next to the video stage: seconds per clip for each audio backend.

For each backend in ``--backends`` and each duration, renders one clip with the video pipeline
alone, then times the audio stage (:func:`wanflash.pipelines.audio.generate_tracks`) on that very
clip, after one warm-up, ``--repeat`` times, and prints the medians and the ratio audio / video
(the target is at most 25%). With the tiny models on a CPU this measures the code paths' overhead,
not the real models' speed; on a GPU pass ``--profile`` with ``WANFLASH_WEIGHTS_DIR`` and
``WANFLASH_AUDIO_WEIGHTS_DIR`` (one backend's weights per run) as for the server.

    python bench/audio.py [--backends ace-step,ltx2] [--durations 2,5] [--repeat 2] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid

from wanflash import MODEL_ID
from wanflash.config import load_settings
from wanflash.jobs.model import JobSpec


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench/audio.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="ace-step,ltx2", help="WANFLASH_AUDIO_MODEL values, comma-separated")
    ap.add_argument("--durations", default="2,5")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default=None, help="where the tiny models are built (default: a temp dir)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import torch

    from wanflash.contract.validation import SIZE_CLASS
    from wanflash.pipelines.audio import generate_tracks
    from wanflash.pipelines.profiles import get_profile
    from wanflash.pipelines.registry import create_audio_backend, create_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        base = load_settings(profile=args.profile, data_dir=args.data_dir or tmp, audio_model="none")
        video = create_pipeline(base)
        video.load()
        print(f"# audio vs video stage  python {platform.python_version()}  torch {torch.__version__}  "
              f"threads {torch.get_num_threads()}  profile {base.engine.profile}  video {width}x{height}")
        print("| backend | steps | seconds | video s | audio s | audio / video |")
        print("|---|---|---|---|---|---|")
        for name in args.backends.split(","):
            settings = base.replace(audio_model=name)
            backend = create_audio_backend(settings)
            backend.load()
            for secs in (int(s) for s in args.durations.split(",")):
                fps = get_profile(base.engine.profile).fps
                spec = JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile=base.engine.profile,
                               positive_prompt="waves on a beach at night", width=width, height=height,
                               resolution_class=SIZE_CLASS.get((width, height), "720p"), duration=secs, fps=fps,
                               num_frames=secs * fps, seeds=[1], cost=0)
                result = video.generate(spec)  # warm-up, and the clip the audio stage hears
                video_s = _median(lambda spec=spec: video.generate(spec), args.repeat)
                generate_tracks(backend, spec, result.videos, [1])  # warm-up
                audio_s = _median(lambda b=backend, spec=spec, r=result: generate_tracks(b, spec, r.videos, [1]),
                                  args.repeat)
                print(f"| {backend.name} | {backend.steps} | {secs} | {video_s:.2f} | {audio_s:.2f} | "
                      f"{audio_s / video_s:.0%} |", flush=True)
            del backend


if __name__ == "__main__":
    main()

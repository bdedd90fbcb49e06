"""Native-audio stage timing: seconds per soundtrack with the configured LTX-2 (tiny by default).

Times :meth:`wanflash.pipelines.audio.LTX2AudioStage.generate` alone on synthetic frames (the
video model does not run), for each duration, ``--repeat`` times after one warm-up, and reports
the median and the real-time factor (audio seconds per wall second). With the tiny model on CPU
this measures the code path's overhead, not LTX-2's speed; on a GPU with real weights pass
``--profile`` and ``WANFLASH_AUDIO_WEIGHTS_DIR`` as for the server.

    python bench/audio.py [--durations 2,5,15] [--fps 16] [--repeat 3] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid

import numpy as np

from wanflash import MODEL_ID
from wanflash.config import load_settings
from wanflash.jobs.model import JobSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--durations", default="2,5,15")
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data-dir", default=None, help="where the tiny models are built (default: a temp dir)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import torch

    from wanflash.pipelines.audio import RECIPES, LTX2AudioStage
    from wanflash.pipelines.profiles import get_profile
    from wanflash.pipelines.registry import audio_weights_root

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(profile=args.profile, data_dir=args.data_dir or tmp)
        recipe = RECIPES["tiny" if get_profile(settings.profile).audio_loader == "tiny" else "distilled"]
        stage = LTX2AudioStage(settings, audio_weights_root(settings), recipe)
        t0 = time.perf_counter()
        stage.load()
        print(f"# audio stage benchmark  python {platform.python_version()}  torch {torch.__version__}  "
              f"threads {torch.get_num_threads()}  device {stage.device}  {recipe.name}  steps {stage.steps}  "
              f"load {time.perf_counter() - t0:.1f} s  video {width}x{height}@{args.fps}")
        print("| seconds | frames | median s | audio s / wall s |")
        print("|---|---|---|---|")
        rng = np.random.default_rng(0)
        for secs in (int(s) for s in args.durations.split(",")):
            n = secs * args.fps
            video = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
            spec = JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile=settings.profile,
                           positive_prompt="waves on a beach at night", width=width, height=height,
                           resolution_class="720p", duration=secs, fps=args.fps, num_frames=n, seeds=[1], cost=0)
            stage.generate(spec, [video], [1])  # warm-up
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                stage.generate(spec, [video], [1])
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"| {secs} | {n} | {med:.2f} | {secs / med:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Ulysses context parallelism on CPU: the tiny model on two gloo ranks.

Both ranks must produce the same frames for the same seed, equal to the single-process result,
and the transformer blocks must really see half of the sequence on each rank. (On CUDA the
public ``enable_parallelism`` path is used instead: tests/gpu/test_group_gpu.py.)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.pipelines.conftest import make_spec
from wanflash.config import Settings
from wanflash.jobs.model import JobSpec

pytestmark = pytest.mark.slow  # three processes load the tiny model (~20 s on 2 cores)


def _record_seq_len(transformers: list[Any], seen: list[int]) -> list[Any]:
    """Hooks on each transformer's last block: the sequence length its hidden states have."""
    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(int((args[0] if args else kwargs["hidden_states"]).shape[1]))

    return [t.blocks[-1].register_forward_pre_hook(hook, with_kwargs=True) for t in transformers]


def cp_rank(rank: int, init: str, gpu: str, settings: Settings, spec_json: str, image: Any, out: str) -> None:
    """One rank of a 2-rank group: generate ``spec_json`` with context parallelism, save the frames
    and the per-block sequence lengths under ``out`` (also used by tests/gpu)."""
    from wanflash.pipelines.parallel import GroupComm, enable_context_parallel
    from wanflash.pipelines.registry import create_pipeline
    from wanflash.worker.group import _pin_device, split_targets

    device = _pin_device(gpu)
    comm = GroupComm(rank, 2, init, device, timeout_s=300)
    pipe = create_pipeline(settings.replace(device=device))
    pipe.load()
    enable_context_parallel(split_targets(pipe), comm)  # what a worker group rank splits
    seen: list[int] = []
    _record_seq_len(pipe.transformers(), seen)  # type: ignore[attr-defined]
    result = pipe.generate(JobSpec.model_validate_json(spec_json), image=image)
    np.save(f"{out}/frames{rank}.npy", result.videos[0])
    Path(f"{out}/seq{rank}.json").write_text(json.dumps(seen))
    comm.close()


def check_two_ranks(engine: Any, settings: Settings, gpus: list[str], spec: JobSpec, image: Any, out: Path,
                    tolerance: int) -> None:
    """Run ``spec`` on two ranks and in ``engine`` (one process); compare frames and shard sizes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        init = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=cp_rank, args=(r, init, gpus[r], settings, spec.model_dump_json(), image, str(out)))
             for r in range(2)]
    for p in procs:
        p.start()
    # The single-process reference meanwhile, with the same hook to learn the full sequence length.
    full: list[int] = []
    handles = _record_seq_len(engine.transformers(), full)
    try:
        ref = engine.generate(spec, image=image).videos[0]
    finally:
        for h in handles:
            h.remove()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0, f"rank process exited with {p.exitcode}"
    f0, f1 = np.load(out / "frames0.npy"), np.load(out / "frames1.npy")
    assert f0.shape == ref.shape == (spec.num_frames, spec.height, spec.width, 3)
    assert np.array_equal(f0, f1)  # same seed, same inputs: identical on every rank
    assert np.abs(f0.astype(np.int16) - ref.astype(np.int16)).max() <= tolerance  # uint8 frames
    seq0 = json.loads((out / "seq0.json").read_text())
    seq1 = json.loads((out / "seq1.json").read_text())
    assert full and len(seq0) == len(seq1) == len(full)
    # Each rank's blocks saw its shard of the tokens (uneven when the count is odd: 135 = 68 + 67).
    assert all(a + b == n and abs(a - b) <= 1 for a, b, n in zip(seq0, seq1, full))


def test_two_gloo_ranks_match_one_process(engine: Any, tiny_settings: Settings, image: Any, tmp_path: Path) -> None:
    # 1088x832 -> 64x48 at tiny scale: 9 latent frames x 4 x 3 patches = 108 tokens, 54 per rank.
    # (An odd count needs uneven shards, which gloo's all_gather cannot do: GPU-only, tests/gpu.)
    check_two_ranks(engine, tiny_settings, ["cpu", "cpu"], make_spec(1088, 832, seeds=[3]), image, tmp_path,
                    tolerance=2)

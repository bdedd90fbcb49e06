"""torch.distributed for one k-rank worker group: the process group, Ulysses context parallelism,
and the two collectives the group needs (broadcast a job, agree on a flag).

Only the rank processes of :mod:`wanflash.worker.group` import this module (it imports torch).

* :class:`GroupComm` joins the group: NCCL on CUDA devices, gloo on CPU. Its timeout is long on
  purpose (an idle group waits in a broadcast for the next job); a rank that dies is noticed by
  the group's parent, which restarts every rank.
* :func:`enable_context_parallel` applies diffusers' Ulysses context parallelism
  (``ContextParallelConfig(ulysses_degree=k, ulysses_anything=True)``, the transformer's own
  ``_cp_plan``) to each
  transformer: every rank runs the whole pipeline on identical inputs, the transformer blocks
  see 1/k of the sequence, and attention swaps heads for sequence with all-to-all.
  On CUDA this is the public ``transformer.enable_parallelism(config=...)``. On CPU that call
  cannot work in diffusers 0.42.1: ``ModelMixin._resolve_parallel_config`` picks the device as
  ``rank % torch.accelerator.device_count()``, which is 0 without an accelerator
  (ZeroDivisionError). For CPU (gloo: the tests) the same steps are done here with the device
  set to CPU, using diffusers' own ``ParallelConfig.setup`` and ``apply_context_parallel``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


class GroupComm:
    """This process's membership of a k-rank group; rank 0 is the leader."""

    def __init__(self, rank: int, world: int, init_method: str, device: str, *, timeout_s: float) -> None:
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s), device_id=self.device if cuda else None)

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; the others pass nothing)."""
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (all-reduce MAX); also a barrier."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def enable_context_parallel(transformers: list[torch.nn.Module], comm: GroupComm) -> None:
    """Ulysses context parallelism of degree ``comm.world`` on each transformer."""
    from diffusers import ContextParallelConfig

    for transformer in transformers:
        # ulysses_anything: the token count (frames x patches) of many listed sizes is not a multiple
        # of k (tiny at 1280x720: 9 x 5 x 3 = 135), and plain Ulysses needs equal shards.
        config = ContextParallelConfig(ulysses_degree=comm.world, ulysses_anything=True)
        if comm.device.type == "cpu":
            _enable_on_cpu(transformer, config, comm)
        else:
            transformer.enable_parallelism(config=config)  # type: ignore[operator]


def _enable_on_cpu(transformer: Any, config: Any, comm: GroupComm) -> None:
    # What ModelMixin.enable_parallelism does for context parallelism, with the device fixed to CPU
    # (see the module docstring for why the public call fails there).
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    parallel = ParallelConfig(context_parallel_config=config)
    mesh = dist.device_mesh.init_device_mesh("cpu", config.mesh_shape, mesh_dim_names=config.mesh_dim_names)
    parallel.setup(comm.rank, comm.world, comm.device, mesh=mesh)
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if not isinstance(module, AttentionModuleMixin) or not hasattr(processor, "_parallel_config"):
            continue
        named = processor._attention_backend
        backend = AttentionBackendName(named) if named else _AttentionBackendRegistry.get_active_backend()[0]
        if not _AttentionBackendRegistry._is_context_parallel_available(backend):
            raise ValueError(f"attention backend {backend} does not support context parallelism")
        processor._parallel_config = parallel
    transformer._parallel_config = parallel
    apply_context_parallel(transformer, config, transformer._cp_plan)

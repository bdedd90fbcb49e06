"""Apply a memory plan (:mod:`wanflash.pipelines.memory`) to loaded Wan pipelines, with diffusers' own tools.

Guarantees after :func:`apply_plan`: with ``fp8`` every transformer stores its block weights in
float8_e4m3fn (``enable_layerwise_casting``, computed in the pipeline dtype); the VAE decodes batch
items one at a time (``enable_slicing``) and, with ``vae_tiling``, in tiles (``enable_tiling``);
and the modules sit where the plan says: ``full`` everything on ``device``; ``text_encoder_cpu``
the text encoder in CPU memory behind a leaf-level group-offloading hook, the rest on ``device``;
``group_offload`` every module behind group-offloading hooks (transformers block by block);
``model_offload`` nothing moved here: :func:`activate` installs diffusers' model offload hooks
on the pipeline about to run (the two pipelines share modules, so the hooks follow the pipeline).
"""

from __future__ import annotations

from typing import Any

import torch

from wanflash.pipelines.memory import MemoryPlan


def gpu_total_bytes(device: torch.device) -> int | None:
    """The device's memory, or None off CUDA (a CPU run has no memory plan to choose)."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def components(*pipes: Any) -> dict[str, torch.nn.Module]:
    """Every distinct module of the pipelines by component name (``t2v.transformer`` for the second pipeline's own)."""
    seen: dict[int, str] = {}
    out: dict[str, torch.nn.Module] = {}
    for i, pipe in enumerate(pipes):
        if pipe is None:
            continue
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module) and id(module) not in seen:
                key = name if i == 0 else f"t2v.{name}"
                seen[id(module)] = key
                out[key] = module
    return out


def apply_plan(plan: MemoryPlan, pipes: tuple[Any, ...], device: torch.device, dtype: torch.dtype) -> None:
    from diffusers.hooks import apply_group_offloading

    mods = components(*pipes)
    transformers = {k: m for k, m in mods.items() if k.split(".")[-1].startswith("transformer")}
    if plan.fp8:
        # Before offloading: the casting hooks must sit inside the offloading ones.
        for t in transformers.values():
            t.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    vae = mods.get("vae")
    if vae is not None:
        vae.enable_slicing()
        if plan.vae_tiling:
            vae.enable_tiling()
    stream = device.type == "cuda"
    cpu = torch.device("cpu")
    for name, module in mods.items():
        if plan.name == "full" or (plan.name == "text_encoder_cpu" and name != "text_encoder"):
            module.to(device)
        elif plan.name == "text_encoder_cpu" or (plan.name == "group_offload" and name not in transformers):
            apply_group_offloading(module, onload_device=device, offload_device=cpu, offload_type="leaf_level",
                                   use_stream=stream)
        elif plan.name == "group_offload":
            apply_group_offloading(module, onload_device=device, offload_device=cpu, offload_type="block_level",
                                   num_blocks_per_group=1, use_stream=stream)


def activate(plan: MemoryPlan, pipe: Any, device: torch.device, current: Any) -> Any:
    """Before ``pipe`` runs: with ``model_offload``, (re)install the model offload hooks on it
    (cheap) when another pipeline had them. Returns the pipeline that now holds them."""
    if plan.name == "model_offload" and current is not pipe:
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return current


def group_offloaded(module: torch.nn.Module) -> bool:
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return _is_group_offload_enabled(module)

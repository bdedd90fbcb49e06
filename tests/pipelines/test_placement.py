"""Each memory plan is applied to the loaded tiny engine with diffusers' tools: hooks, dtypes, devices.

On a CPU the onload device is the CPU too, so what is checked is that the plan's hooks and
dtypes are in place and that the engine still renders through them; tests/gpu covers devices."""

from __future__ import annotations

import pytest
import torch

from wanflash.config import Settings
from wanflash.pipelines.placement import components, group_offloaded
from wanflash.pipelines.registry import create_pipeline

from .conftest import make_spec


def load(tiny_settings: Settings, **settings: object):
    s = Settings(**{**tiny_settings.model_dump(), **settings})  # the session's tiny model, built once
    pipe = create_pipeline(s)
    pipe.load()
    return pipe


def render(pipe, image) -> None:
    spec = make_spec(duration=2).model_copy(update={"num_frames": 5})  # one short clip: the hooks run all the same
    out = pipe.generate(spec, image=image)
    assert out.videos[0].shape == (spec.num_frames, spec.height, spec.width, 3)


@pytest.mark.parametrize("plan", ["full", "text_encoder_cpu", "group_offload", "model_offload"])
def test_plan_is_applied(plan: str, tiny_settings: Settings, image) -> None:
    pipe = load(tiny_settings, memory=plan)
    assert pipe.plan.name == plan
    mods = components(pipe.i2v, pipe.t2v)
    assert {"text_encoder", "vae", "transformer", "transformer_2", "t2v.transformer", "t2v.transformer_2"} <= set(mods)
    grouped = {k for k, mod in mods.items() if group_offloaded(mod)}
    expected = {"full": set(), "model_offload": set(), "text_encoder_cpu": {"text_encoder"},
                "group_offload": set(mods)}[plan]
    assert grouped == expected
    if plan == "group_offload":  # transformers block by block, one group per block
        from diffusers.hooks.group_offloading import _get_top_level_group_offload_hook

        hook = _get_top_level_group_offload_hook(mods["transformer"])
        assert hook.config.offload_type.value == "block_level" and hook.config.num_blocks_per_group == 1
    assert pipe.i2v.vae.use_slicing and not pipe.i2v.vae.use_tiling
    if plan != "full":  # full is what every other engine test renders with
        render(pipe, image)
    if plan == "model_offload":  # diffusers' model offload hooks (accelerate) on the pipeline that ran
        assert all(hasattr(getattr(pipe.i2v, n), "_hf_hook") for n in ("text_encoder", "transformer", "vae"))
    else:
        assert not hasattr(pipe.i2v.transformer, "_hf_hook")


def test_fp8_storage_and_vae_tiling(tiny_settings: Settings, image) -> None:
    pipe = load(tiny_settings, memory="full", fp8_weights=True, vae_tiling="on")
    assert pipe.plan.fp8 and pipe.plan.vae_tiling
    for t in pipe.transformers():
        block = t.blocks[0]
        assert block.attn1.to_q.weight.dtype == torch.float8_e4m3fn
        assert block.ffn.net[2].weight.dtype == torch.float8_e4m3fn
        assert t.patch_embedding.weight.dtype == pipe.dtype  # diffusers' skip patterns stay in the run dtype
    assert pipe.i2v.text_encoder.dtype == pipe.dtype  # only the transformers are stored in fp8
    assert pipe.i2v.vae.use_tiling
    render(pipe, image)


def test_deprecated_cpu_offload_maps_to_a_plan(tiny_settings: Settings) -> None:
    pipe = load(tiny_settings, cpu_offload="group")
    assert pipe.plan.name == "group_offload"
    assert group_offloaded(pipe.i2v.transformer)


def test_cpu_auto_is_full(engine) -> None:
    assert engine.plan.name == "full" and "no GPU" in engine.plan.reason

"""The engine on toy-width copies of the published checkpoints (tests/pipelines/published_layouts.py).

Each test is a fault a real user would have met: the lightx2v LoRA repo's files (dotted names,
both tasks in one directory, the t2v/ experts), the TI2V-5B's dtype, a distilled 5B's index without
``expand_timesteps``, and the 4-step sampler the distillation was trained with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.pipelines.published_layouts import LORA_FILES, Layouts, diffusers_format_lora
from wanflash.config import Settings
from wanflash.pipelines.loras import LoraMismatch, assign, classify
from wanflash.pipelines.profiles import get_profile

torch = pytest.importorskip("torch")


def load(tmp: Path, profile: str, weights: Path, lora_dir: Path | None = None, dtype: str = "float32"):
    from wanflash.pipelines.registry import create_pipeline

    settings = Settings(data_dir=tmp, profile=profile, weights_dir=weights, lora_dir=lora_dir, device="cpu",
                        dtype=dtype, audio_model="none")
    pipe = create_pipeline(settings)
    pipe.load()
    return pipe


def lora_delta(path: Path, module: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight delta, bias delta) block 0's ``module`` gets from the lightx2v-format file at ``path``."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    key = f"diffusion_model.blocks.0.{module}"
    return (sd[f"{key}.lora_up.weight"].float() @ sd[f"{key}.lora_down.weight"].float(),
            sd[f"{key}.diff_b"].float())


def test_whole_lora_repo_goes_to_the_right_experts_and_is_fused(published: Layouts, tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    pipe = load(tmp_path, "wan2.2-i2v-a14b", published.i2v_a14b_t2v, published.loras)
    experts = {("i2v", "transformer"): pipe.i2v.transformer, ("i2v", "transformer_2"): pipe.i2v.transformer_2,
               ("t2v", "transformer"): pipe.t2v.transformer, ("t2v", "transformer_2"): pipe.t2v.transformer_2}
    files = {("i2v", "transformer"): LORA_FILES[0], ("i2v", "transformer_2"): LORA_FILES[1],
             ("t2v", "transformer"): LORA_FILES[2], ("t2v", "transformer_2"): LORA_FILES[3]}
    for (task, component), model in experts.items():
        base_dir = published.i2v_a14b_t2v / ("t2v" if task == "t2v" else "") / component
        base = WanTransformer3DModel.from_pretrained(base_dir, dtype=torch.float32)
        for wan_name, ours in (("self_attn.q", "attn1.to_q"), ("cross_attn.o", "attn2.to_out.0"), ("ffn.0", "ffn.net.0.proj")):
            got_w = model.get_submodule(f"blocks.0.{ours}").weight.detach().float()
            got_b = model.get_submodule(f"blocks.0.{ours}").bias.detach().float()
            base_w = base.get_submodule(f"blocks.0.{ours}").weight.float()
            base_b = base.get_submodule(f"blocks.0.{ours}").bias.float()
            for name in LORA_FILES:
                dw, db = lora_delta(published.loras / name, wan_name)
                fused = torch.allclose(got_w, base_w + dw, atol=1e-3) and torch.allclose(got_b, base_b + db, atol=1e-3)
                assert fused == (name == files[(task, component)]), (task, component, ours, name)
        # The adapters are gone after fusing: plain layers, nothing left for peft to apply.
        assert not [n for n, _ in model.named_modules() if "lora" in n], (task, component)
        assert not getattr(model, "peft_config", None)


def test_diffusers_format_loras_load_and_fuse(published: Layouts, tmp_path: Path) -> None:
    """The same LoRAs saved under diffusers' module names (as PEFT/diffusers trainers write them) fuse alike."""
    from safetensors.torch import load_file, save_file

    repo = tmp_path / "diffusers-loras"
    repo.mkdir()
    for name in LORA_FILES[:2]:  # the i2v pair
        save_file(diffusers_format_lora(load_file(str(published.loras / name))), str(repo / name))
    plain = load(tmp_path / "plain", "wan2.2-i2v-a14b", published.i2v_a14b)
    pipe = load(tmp_path / "fused", "wan2.2-i2v-a14b", published.i2v_a14b, repo)
    for component, name in (("transformer", LORA_FILES[0]), ("transformer_2", LORA_FILES[1])):
        sd = load_file(str(repo / name))
        delta = (sd["transformer.blocks.0.attn1.to_q.lora_B.weight"].float()
                 @ sd["transformer.blocks.0.attn1.to_q.lora_A.weight"].float())
        got = getattr(pipe.i2v, component).get_submodule("blocks.0.attn1.to_q").weight.detach().float()
        base = getattr(plain.i2v, component).get_submodule("blocks.0.attn1.to_q").weight.detach().float()
        assert torch.allclose(got, base + delta, atol=1e-3), component


def test_one_file_per_expert_or_a_clear_failure(published: Layouts, tmp_path: Path) -> None:
    repo = tmp_path / "loras"
    shutil.copytree(published.loras, repo)
    both = [("i2v", "high"), ("i2v", "low"), ("t2v", "high"), ("t2v", "low")]
    chosen = assign(repo, both)
    assert {k: v.path.name for k, v in chosen.items()} == dict(zip(both, LORA_FILES))
    assert all("." not in f.adapter_name for f in chosen.values())
    assert classify(Path("Wan2.2-TI2V-5B-something_high.safetensors")).task is None  # ti2v is neither
    # A second i2v high-noise file: which one is meant cannot be told.
    shutil.copy(repo / LORA_FILES[0], repo / LORA_FILES[0].replace("1022", "1030"))
    with pytest.raises(LoraMismatch, match="2 LoRAs .* fit the I2V high-noise expert"):
        load(tmp_path, "wan2.2-i2v-a14b", published.i2v_a14b, repo)
    # Only the i2v pair, but t2v/ experts are loaded: they would run base weights at 4 steps.
    only_i2v = tmp_path / "only-i2v"
    only_i2v.mkdir()
    for name in LORA_FILES[:2]:
        shutil.copy(published.loras / name, only_i2v / name)
    with pytest.raises(LoraMismatch, match="no LoRA .* for the T2V high-noise expert"):
        load(tmp_path, "wan2.2-i2v-a14b", published.i2v_a14b_t2v, only_i2v)
    # Without t2v/ the t2v files are simply not needed.
    pipe = load(tmp_path, "wan2.2-i2v-a14b", published.i2v_a14b, published.loras)
    assert pipe.t2v is None


def test_ti2v_5b_stays_in_the_configured_dtype(published: Layouts, tmp_path: Path) -> None:
    pipe = load(tmp_path, "wan2.2-ti2v-5b", published.ti2v_5b, dtype="bfloat16")
    dtypes = pipe.module_dtypes()
    assert set(dtypes) == {"i2v.transformer", "i2v.text_encoder", "i2v.vae", "t2v.transformer", "t2v.text_encoder",
                           "t2v.vae"}
    for name, found in dtypes.items():
        assert found == ({torch.float32} if name.endswith(".vae") else {torch.bfloat16}), name
    assert pipe.t2v.transformer is pipe.i2v.transformer  # one set of weights for both tasks


@pytest.mark.parametrize("layout", ["i2v_a14b_t2v", "i2v_a14b"])
def test_a14b_stays_in_the_configured_dtype(published: Layouts, tmp_path: Path, layout: str) -> None:
    pipe = load(tmp_path, "wan2.2-i2v-a14b", getattr(published, layout), published.loras, dtype="bfloat16")
    for name, found in pipe.module_dtypes().items():
        assert found == ({torch.float32} if name.endswith(".vae") else {torch.bfloat16}), name


def test_distilled_5b_index_without_expand_timesteps(published: Layouts, tmp_path: Path) -> None:
    import json

    assert "expand_timesteps" not in json.loads((published.ti2v_5b_distilled / "model_index.json").read_text())
    pipe = load(tmp_path, "wan2.2-ti2v-5b", published.ti2v_5b_distilled)
    assert pipe.i2v.config.expand_timesteps and pipe.t2v.config.expand_timesteps


def expert_per_step(pipe, timesteps: list[float]) -> list[str]:
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    return ["high" if t >= boundary else "low" for t in timesteps]


def test_a14b_samples_as_the_distillation_was_trained(published: Layouts, tmp_path: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sampler = get_profile("wan2.2-i2v-a14b").sampler
    # lightx2v configs/distill/wan22/wan_moe_*_distill_lora.json: shift 5, these steps, Euler.
    assert (sampler.kind, sampler.shift, sampler.denoising_steps) == ("flow-euler-distill", 5.0, (1000, 750, 500, 250))
    pipe = load(tmp_path, "wan2.2-i2v-a14b", published.i2v_a14b_t2v, published.loras)
    for p in (pipe.i2v, pipe.t2v):
        sched = p.scheduler
        assert isinstance(sched, FlowMatchEulerDiscreteScheduler)
        sched.set_timesteps(get_profile("wan2.2-i2v-a14b").steps)
        assert sched.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.333, 625.0], abs=1e-3)
        assert sched.timesteps.tolist() == pytest.approx(list(sampler.timesteps), abs=1e-3)
        assert sched.sigmas.tolist() == pytest.approx([1.0, 0.9375, 0.83333, 0.625, 0.0], abs=1e-4)
        # lightx2v's boundary_step_index 2: two steps on the high-noise expert, two on the low-noise one.
        assert expert_per_step(p, sched.timesteps.tolist()) == ["high", "high", "low", "low"]
    with pytest.raises(ValueError, match="distilled for 4 steps"):
        pipe.i2v.scheduler.set_timesteps(8)


@pytest.mark.parametrize("profile,layout", [("wan2.2-ti2v-5b", "ti2v_5b"), ("tiny", None)])
def test_checkpoint_sampler_timesteps_are_pinned(published: Layouts, tmp_path: Path, profile: str,
                                                 layout: str | None) -> None:
    prof = get_profile(profile)
    assert prof.sampler.kind == "checkpoint"
    if layout is None:
        from wanflash.pipelines.registry import create_pipeline

        pipe = create_pipeline(Settings(data_dir=tmp_path, profile="tiny", device="cpu", audio_model="none"))
        pipe.load()
    else:
        pipe = load(tmp_path, profile, getattr(published, layout))
    pipe.i2v.scheduler.set_timesteps(prof.steps)
    assert pipe.i2v.scheduler.timesteps.tolist() == pytest.approx(list(prof.sampler.timesteps), abs=1.0)

"""Memory plans as arithmetic: parameter counts of the published checkpoints, estimates, the plan ``auto`` picks."""

from __future__ import annotations

import pytest

from wanflash.config import Settings
from wanflash.pipelines import memory as m
from wanflash.pipelines.profiles import get_profile

# published-layouts.json, "exact_parameter_counts" (counted from the published safetensors).
EXACT = {"wan2.2_ti2v_5b_transformer": 4_999_787_712, "wan2.2_a14b_expert_i2v": 14_288_901_184,
         "wan2.2_a14b_expert_t2v": 14_288_491_584, "umt5_xxl_encoder": 5_680_910_336,
         "wan2.2_vae": 704_688_668, "wan2.1_vae": 126_892_531}
GB = 10**9


def test_configs_add_up_to_the_published_parameter_counts() -> None:
    assert m.DIT_5B.params == EXACT["wan2.2_ti2v_5b_transformer"]
    assert m.DIT_A14B_I2V.params == EXACT["wan2.2_a14b_expert_i2v"]
    assert m.DIT_A14B_T2V.params == EXACT["wan2.2_a14b_expert_t2v"]
    assert m.UMT5_XXL.params == EXACT["umt5_xxl_encoder"]
    assert (m.WAN22_VAE_PARAMS, m.WAN21_VAE_PARAMS) == (EXACT["wan2.2_vae"], EXACT["wan2.1_vae"])


def test_block_split_matches_diffusers_modules() -> None:
    """The per-block count (what group offloading streams) is diffusers' own block, built on the meta device."""
    torch = pytest.importorskip("torch")
    from diffusers import WanTransformer3DModel

    d = m.DIT_A14B_I2V
    with torch.device("meta"):
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128,
                                      in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824,
                                      num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    block = sum(p.numel() for p in model.blocks[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    assert block == d.block_params
    assert total - 2 * block == d.other_params


def test_token_counts_are_the_published_ones() -> None:
    assert m.tokens(m.LAYOUTS["wan2.2-ti2v-5b"], 1280, 704, 121) == 27280
    assert m.tokens(m.LAYOUTS["wan2.2-i2v-a14b"], 1280, 720, 81) == 75600


def test_a14b_with_t2v_is_117_gib_of_weights_and_needs_offload_on_80_gb() -> None:
    full = m.estimate("wan2.2-i2v-a14b", m.MemoryPlan("full"), t2v=True)
    weights = 4 * EXACT["wan2.2_a14b_expert_i2v"] * 2 + EXACT["umt5_xxl_encoder"] * 2 + EXACT["wan2.1_vae"] * 4
    assert 117 <= weights / m.GiB < 118
    assert full.gpu_bytes > weights  # weights plus the largest activation
    assert not m.fits(full, 80 * m.GiB)
    plan = m.choose_plan("wan2.2-i2v-a14b", 80 * m.GiB, t2v=True)
    assert plan.name == "model_offload" and "fits 80 GiB" in plan.reason


def test_estimates_shrink_down_the_plan_order_and_with_fp8() -> None:
    for profile in m.LAYOUTS:
        peaks = [m.estimate(profile, m.MemoryPlan(name)).gpu_bytes for name in m.PLAN_ORDER]
        assert peaks == sorted(peaks, reverse=True), profile
        for name in m.PLAN_ORDER:
            bf16 = m.estimate(profile, m.MemoryPlan(name))
            fp8 = m.estimate(profile, m.MemoryPlan(name, fp8=True))
            assert fp8.gpu_bytes <= bf16.gpu_bytes
            assert fp8.host_bytes <= bf16.host_bytes
    # model offload holds one expert at a time: t2v/ adds host memory, not GPU memory
    a = m.estimate("wan2.2-i2v-a14b", m.MemoryPlan("model_offload"), t2v=False)
    b = m.estimate("wan2.2-i2v-a14b", m.MemoryPlan("model_offload"), t2v=True)
    assert a.gpu_bytes == b.gpu_bytes and b.host_bytes - a.host_bytes == 2 * EXACT["wan2.2_a14b_expert_t2v"] * 2


def test_per_token_timesteps_and_vae_tiling_count() -> None:
    dit = m.DIT_5B
    assert m.dit_activation_bytes(dit, 27280, per_token_timesteps=True) > m.dit_activation_bytes(
        dit, 27280, per_token_timesteps=False)
    layout = m.LAYOUTS["wan2.2-ti2v-5b"]
    assert m.vae_activation_bytes(layout, 1280, 704, 121, tiled=True) < m.vae_activation_bytes(
        layout, 1280, 704, 121, tiled=False)
    # 1080p costs more than 720p in every stage
    assert m.estimate("wan2.2-ti2v-5b", m.MemoryPlan("full", native_1080p=True)).gpu_bytes > m.estimate(
        "wan2.2-ti2v-5b", m.MemoryPlan("full")).gpu_bytes


@pytest.mark.parametrize(("profile", "gib", "t2v", "plan"), [
    ("wan2.2-i2v-a14b", 24, True, "group_offload"),   # RTX 4090: only group offload fits
    ("wan2.2-i2v-a14b", 24, False, "group_offload"),
    ("wan2.2-i2v-a14b", 48, True, "model_offload"),
    ("wan2.2-i2v-a14b", 80, False, "text_encoder_cpu"),
    ("wan2.2-i2v-a14b", 141, True, "text_encoder_cpu"),
    ("wan2.2-ti2v-5b", 24, False, "text_encoder_cpu"),
    ("wan2.2-ti2v-5b", 48, False, "full"),
])
def test_auto_picks_the_first_plan_that_fits(profile: str, gib: int, t2v: bool, plan: str) -> None:
    chosen = m.choose_plan(profile, gib * m.GiB, t2v=t2v)
    assert chosen.name == plan
    assert m.fits(m.estimate(profile, chosen, t2v=t2v), gib * m.GiB)
    earlier = m.PLAN_ORDER[:m.PLAN_ORDER.index(plan)]
    assert not any(m.fits(m.estimate(profile, m.MemoryPlan(n, vae_tiling=True), t2v=t2v), gib * m.GiB)
                   for n in earlier)


def test_auto_tries_vae_tiling_before_offloading_more() -> None:
    # 5B full: the untiled VAE decode sets the peak; find a GPU where only the tiled variant fits
    untiled = m.estimate("wan2.2-ti2v-5b", m.MemoryPlan("full")).gpu_bytes
    tiled = m.estimate("wan2.2-ti2v-5b", m.MemoryPlan("full", vae_tiling=True)).gpu_bytes
    assert tiled < untiled
    total = int((tiled + untiled) / 2 + m.RESERVE_BYTES) / m.USABLE_FRACTION
    chosen = m.choose_plan("wan2.2-ti2v-5b", int(total))
    assert (chosen.name, chosen.vae_tiling) == ("full", True)
    assert m.choose_plan("wan2.2-ti2v-5b", int(total), vae_tiling="off").name == "text_encoder_cpu"


def test_explicit_settings_and_no_gpu() -> None:
    assert m.choose_plan("wan2.2-i2v-a14b", None).name == "full"  # CPU: nothing to offload to
    assert m.choose_plan("tiny", 24 * m.GiB, setting="group_offload").name == "group_offload"
    set_ = m.choose_plan("wan2.2-i2v-a14b", 80 * m.GiB, setting="group_offload", fp8=True)
    assert (set_.name, set_.fp8) == ("group_offload", True) and set_.reason.startswith("set:")
    too_big = m.choose_plan("wan2.2-i2v-a14b", 24 * m.GiB, setting="full")
    assert too_big.name == "full" and too_big.reason.startswith("does not fit")


def test_native_1080p_generation_size() -> None:
    five_b = get_profile("wan2.2-ti2v-5b")
    assert m.generation_size(five_b, m.MemoryPlan("full"), 1920, 1080) == (1280, 704)  # upscaled after
    assert m.generation_size(five_b, m.MemoryPlan("full", native_1080p=True), 1920, 1080) == (1920, 1088)
    assert m.generation_size(five_b, m.MemoryPlan("full", native_1080p=True), 1280, 720) == (1280, 704)
    # the published weights are 720p models: auto never generates natively, "on" does
    assert not m.choose_plan("wan2.2-ti2v-5b", 141 * m.GiB).native_1080p
    assert m.choose_plan("wan2.2-ti2v-5b", 141 * m.GiB, native_1080p="on").native_1080p


def test_settings_map_the_deprecated_cpu_offload() -> None:
    assert Settings(cpu_offload="model").engine.memory_setting == "model_offload"
    assert Settings(cpu_offload="group", memory="group_offload").engine.memory_setting == "group_offload"
    assert Settings(memory="full").engine.memory_setting == "full"
    assert Settings().engine.memory_setting == "auto"
    with pytest.raises(ValueError, match="WANFLASH_CPU_OFFLOAD"):
        Settings(cpu_offload="model", memory="group_offload")


def test_table_rows_cover_every_profile_and_plan() -> None:
    rows = m.table_rows()
    assert {r[0] for r in rows} == {"wan2.2-ti2v-5b", "wan2.2-i2v-a14b", "wan2.2-i2v-a14b + t2v/"}
    assert len(rows) == 3 * len(m.PLAN_ORDER)

"""Toy-width copies of the published checkpoints, written from ../shared/reference/published-layouts.json.

Each copy has the real layout: the real pipeline class names and folders (``model_index.json``,
``scheduler/``, ``transformer/``, ``transformer_2/``, ``vae/``, ``text_encoder/``, ``t2v/``), the real
scheduler configs and pipeline flags (``expand_timesteps``, ``boundary_ratio``), the real transformer
and VAE configs with only widths and depth reduced, weights stored as published (bf16, the VAE in
float32), random. The LoRA directory holds the four files of ``lightx2v/Wan2.2-Distill-Loras`` under
their real names, in their non-diffusers Wan key format, at toy width and rank.

What is not real: the tokenizer (a local WordLevel one, as in the tiny model: umT5's SentencePiece
model cannot be built offline) and therefore the text encoder's vocabulary size.

:func:`write_layouts` builds everything in a few seconds; the ``published`` fixture does it once
per test session.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "published-layouts.json"
SEED = 20261202
TOY = {"num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2}
LORA_RANK = 4
LORA_FILES = [
    "wan2.2_i2v_A14b_high_noise_lora_rank64_lightx2v_4step_1022.safetensors",
    "wan2.2_i2v_A14b_low_noise_lora_rank64_lightx2v_4step_1022.safetensors",
    "wan2.2_t2v_A14b_high_noise_lora_rank64_lightx2v_4step_1217.safetensors",
    "wan2.2_t2v_A14b_low_noise_lora_rank64_lightx2v_4step_1217.safetensors",
]


@dataclass(frozen=True)
class Layouts:
    ti2v_5b: Path  # Wan-AI/Wan2.2-TI2V-5B-Diffusers
    ti2v_5b_distilled: Path  # the same with a model_index.json that lacks expand_timesteps
    i2v_a14b: Path  # Wan-AI/Wan2.2-I2V-A14B-Diffusers, no t2v/
    i2v_a14b_t2v: Path  # the same with Wan-AI/Wan2.2-T2V-A14B-Diffusers as t2v/
    loras: Path  # lightx2v/Wan2.2-Distill-Loras, all four files


def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


def _toy_transformer(cfg: dict[str, Any], text_dim: int):
    from diffusers import WanTransformer3DModel

    cfg = {**cfg, **TOY, "text_dim": text_dim}
    return WanTransformer3DModel(**cfg).eval()


def _toy_text_encoder(cfg: dict[str, Any], vocab: int):
    from transformers import UMT5Config, UMT5EncoderModel

    keep = {k: v for k, v in cfg.items() if k not in ("num_decoder_layers",)}
    keep.update(vocab_size=vocab, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2)
    return UMT5EncoderModel(UMT5Config(**keep)).eval()


def _toy_vae(cfg: dict[str, Any]):
    from diffusers import AutoencoderKLWan

    cfg = dict(cfg)
    cfg.pop("clip_output", None)  # written by a newer diffusers; 0.42.1 does not take it
    cfg["base_dim"] = 4
    if "decoder_base_dim" in cfg:
        cfg["decoder_base_dim"] = 4
    cfg["num_res_blocks"] = 1
    return AutoencoderKLWan(**cfg).eval()


def _scheduler(cfg: dict[str, Any]):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**cfg)


def _save(pipe: Any, where: Path) -> None:
    """Saved as published: everything in bf16 except the VAE (float32)."""
    import torch

    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and name != "vae":
            module.to(torch.bfloat16)
    pipe.save_pretrained(where)


def _published_index(where: Path, published: dict[str, Any]) -> None:
    """``model_index.json`` exactly as published, but for the tokenizer's class (ours is not umT5's)."""
    ours = json.loads((where / "model_index.json").read_text())
    index = {**published, "tokenizer": ours["tokenizer"], "_diffusers_version": ours["_diffusers_version"]}
    (where / "model_index.json").write_text(json.dumps(index, indent=2))


def lora_state_dict(transformer_cfg: dict[str, Any], *, i2v: bool, seed: int) -> dict[str, Any]:
    """A lightx2v-format LoRA for ``transformer_cfg`` at toy width: lora_down/lora_up/diff_b per
    projection, norm ``.diff``, ``blocks.N.diff_m``, ``head.head.diff``/``diff_b``; I2V files also
    carry Wan2.1's image branch (``k_img``/``v_img``, absent from Wan2.2 models)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    inner = TOY["num_attention_heads"] * TOY["attention_head_dim"]
    ffn = TOY["ffn_dim"]
    out = transformer_cfg["out_channels"] * 4  # patch 1x2x2
    r = LORA_RANK

    def t(*shape: int) -> Any:
        return (torch.randn(*shape, generator=g) * 0.05).to(torch.bfloat16)

    sd: dict[str, Any] = {}
    proj = {**{f"{a}.{p}": (inner, inner) for a in ("self_attn", "cross_attn") for p in "qkvo"},
            "ffn.0": (inner, ffn), "ffn.2": (ffn, inner)}
    if i2v:
        proj.update({"cross_attn.k_img": (inner, inner), "cross_attn.v_img": (inner, inner)})
    for i in range(TOY["num_layers"]):
        b = f"diffusion_model.blocks.{i}"
        for name, (fan_in, fan_out) in proj.items():
            sd[f"{b}.{name}.lora_down.weight"] = t(r, fan_in)
            sd[f"{b}.{name}.lora_up.weight"] = t(fan_out, r)
            sd[f"{b}.{name}.diff_b"] = t(fan_out)
        for norm in ["norm3", "cross_attn.norm_q", "cross_attn.norm_k"] + (["cross_attn.norm_k_img"] if i2v else []):
            sd[f"{b}.{norm}.diff"] = t(inner)
        sd[f"{b}.diff_m"] = t(1, 6, inner)
    sd["diffusion_model.head.head.diff"] = t(out, inner)
    sd["diffusion_model.head.head.diff_b"] = t(out)
    return sd


def diffusers_format_lora(sd: dict[str, object]) -> dict[str, object]:
    """The same LoRA under diffusers' WanTransformer3DModel module names (lora_A/lora_B, attn1.to_q, ffn.net.0.proj)."""
    names = {**{f"self_attn.{p}": f"attn1.to_{p}" for p in "qkv"}, "self_attn.o": "attn1.to_out.0",
             **{f"cross_attn.{p}": f"attn2.to_{p}" for p in "qkv"}, "cross_attn.o": "attn2.to_out.0",
             "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"diffusion_model\.blocks\.(\d+)\.(.+)\.lora_(down|up)\.weight", key)
        if m and m.group(2) in names:
            ab = "A" if m.group(3) == "down" else "B"
            out[f"transformer.blocks.{m.group(1)}.{names[m.group(2)]}.lora_{ab}.weight"] = value
    return out


def write_layouts(root: Path) -> Layouts:
    import torch
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from safetensors.torch import save_file

    from wanflash.pipelines.tiny import _tokenizer

    ref = reference()
    lay = ref["layouts"]
    torch.manual_seed(SEED)
    tok = _tokenizer()
    root.mkdir(parents=True, exist_ok=True)

    # Wan2.2-TI2V-5B: one transformer, WanPipeline, expand_timesteps
    five = lay["Wan-AI/Wan2.2-TI2V-5B-Diffusers"]
    te = _toy_text_encoder(five["text_encoder"], len(tok))
    pipe = WanPipeline(tokenizer=tok, text_encoder=te, vae=_toy_vae(five["vae"]),
                       scheduler=_scheduler(five["scheduler"]), transformer=_toy_transformer(five["transformer"], 32),
                       transformer_2=None, boundary_ratio=five["model_index"]["boundary_ratio"],
                       expand_timesteps=five["model_index"]["expand_timesteps"])
    _save(pipe, root / "Wan2.2-TI2V-5B-Diffusers")
    _published_index(root / "Wan2.2-TI2V-5B-Diffusers", five["model_index"])
    distilled = root / "FastWan2.2-TI2V-5B-Diffusers"
    shutil.copytree(root / "Wan2.2-TI2V-5B-Diffusers", distilled)
    index = json.loads((distilled / "model_index.json").read_text())
    del index["expand_timesteps"]
    (distilled / "model_index.json").write_text(json.dumps(index, indent=2))

    # Wan2.2-I2V-A14B: two 36-channel experts, boundary 0.9, no image encoder; T2V-A14B as t2v/
    a14 = lay["Wan-AI/Wan2.2-I2V-A14B-Diffusers"]
    te = _toy_text_encoder(a14["text_encoder"], len(tok))
    vae = _toy_vae(a14["vae"])
    sched = _scheduler(a14["scheduler"])
    i2v = WanImageToVideoPipeline(tokenizer=tok, text_encoder=te, vae=vae, scheduler=sched,
                                  transformer=_toy_transformer(a14["transformer"], 32),
                                  transformer_2=_toy_transformer(a14["transformer_2"], 32),
                                  boundary_ratio=a14["model_index"]["boundary_ratio"])
    _save(i2v, root / "Wan2.2-I2V-A14B-Diffusers")
    _published_index(root / "Wan2.2-I2V-A14B-Diffusers", a14["model_index"])
    t2 = lay["Wan-AI/Wan2.2-T2V-A14B-Diffusers"]
    t2v = WanPipeline(tokenizer=tok, text_encoder=te, vae=vae, scheduler=sched,
                      transformer=_toy_transformer(t2["transformer"], 32),
                      transformer_2=_toy_transformer(t2["transformer_2"], 32),
                      boundary_ratio=t2["model_index"]["boundary_ratio"])
    with_t2v = root / "Wan2.2-I2V-A14B-with-t2v"
    shutil.copytree(root / "Wan2.2-I2V-A14B-Diffusers", with_t2v)
    _save(t2v, with_t2v / "t2v")

    loras = root / "Wan2.2-Distill-Loras"
    loras.mkdir()
    for n, name in enumerate(LORA_FILES):
        save_file(lora_state_dict(a14["transformer"], i2v="_i2v_" in name, seed=SEED + n), str(loras / name))
    return Layouts(root / "Wan2.2-TI2V-5B-Diffusers", distilled, root / "Wan2.2-I2V-A14B-Diffusers", with_t2v, loras)


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Layouts:
    pytest.importorskip("diffusers")
    return write_layouts(tmp_path_factory.mktemp("published"))

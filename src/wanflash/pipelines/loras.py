"""Distilled LoRA files: which file goes into which expert, and whether it fits (no torch import).

A LoRA directory may hold a whole published repository, e.g. ``lightx2v/Wan2.2-Distill-Loras``
with an image-to-video pair (``wan2.2_i2v_A14b_high_noise_lora_rank64_lightx2v_4step_1022``,
``..._low_noise_...``) and a text-to-video pair (``wan2.2_t2v_..._1217``). Each file is matched
to experts by what its name says it is:

* task: ``i2v`` or ``t2v`` in the name (``ti2v`` is neither); a name without one is taken as
  image-to-video, the profile's own task (files of ``Wan2.2-Lightning``'s
  ``high_noise_model.safetensors`` kind);
* expert: ``high`` or ``low`` in the name; a name with neither goes to both experts of its task.

Every expert that is loaded must get exactly one file: none, or two candidates, is a
:class:`LoraMismatch` naming the files, never a silent choice. :func:`inspect_lora` reads only a
file's safetensors header (key names and shapes) and :func:`check_fit` compares it with the
transformer's ``config.json``; ``wanflash doctor`` uses both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Task = Literal["i2v", "t2v"]
Expert = Literal["high", "low"]
# Expert names as the pipelines call them.
COMPONENT: dict[Expert, str] = {"high": "transformer", "low": "transformer_2"}


class LoraMismatch(ValueError):
    """The LoRA directory does not give every loaded expert exactly one file."""


@dataclass(frozen=True)
class LoraFile:
    path: Path
    task: Task | None  # None: the name does not say
    expert: Expert | None

    @property
    def adapter_name(self) -> str:
        """A peft adapter name (module names may not contain dots, so never the file stem)."""
        return f"{self.task or 'i2v'}_{self.expert or 'both'}"


def classify(path: Path) -> LoraFile:
    name = path.name.lower()
    tasks = [t for t in ("i2v", "t2v") if re.search(rf"(?<![a-z]){t}", name)]
    experts = [e for e in ("high", "low") if e in name]
    if len(tasks) > 1 or len(experts) > 1:
        raise LoraMismatch(f"cannot tell which expert {path.name} is for: its name says "
                           f"{' and '.join(tasks + experts)}; rename it")
    return LoraFile(path, tasks[0] if tasks else None, experts[0] if experts else None)  # type: ignore[arg-type]


def lora_files(lora_dir: Path) -> list[Path]:
    files = sorted(Path(lora_dir).glob("*.safetensors"))
    if not files:
        raise LoraMismatch(f"no *.safetensors LoRA in {lora_dir} (WANFLASH_LORA_DIR)")
    return files


def assign(lora_dir: Path, experts: Iterable[tuple[Task, Expert]]) -> dict[tuple[Task, Expert], LoraFile]:
    """The one file for each ``(task, expert)`` that will be loaded; :class:`LoraMismatch` otherwise."""
    files = [classify(p) for p in lora_files(lora_dir)]
    out: dict[tuple[Task, Expert], LoraFile] = {}
    for task, expert in experts:
        found = [f for f in files if (f.task or "i2v") == task and f.expert in (expert, None)]
        where = f"the {task.upper()} {expert}-noise expert ({'t2v/' if task == 't2v' else ''}{COMPONENT[expert]})"
        if not found:
            hint = (f"add a file named like wan2.2_t2v_A14b_{expert}_noise_lora_....safetensors (files that do not "
                    "name a task are taken as i2v), or remove the t2v/ directory" if task == "t2v" else
                    f"add a file whose name has '{expert}' (or one without high/low for both experts)")
            raise LoraMismatch(f"no LoRA in {lora_dir} for {where}: {hint}")
        if len(found) > 1:
            raise LoraMismatch(f"{len(found)} LoRAs in {lora_dir} fit {where}: "
                               f"{', '.join(f.path.name for f in found)}; keep one")
        out[(task, expert)] = found[0]
    return out


# -- headers

@dataclass(frozen=True)
class LoraInfo:
    path: Path
    rank: int
    blocks: int  # highest block index + 1
    keys: int
    shapes: dict[str, tuple[int, ...]]


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def inspect_lora(path: Path) -> LoraInfo:
    shapes = read_header(path)
    downs = [s for k, s in shapes.items() if k.endswith(("lora_down.weight", "lora_A.weight"))]
    if not downs:
        raise LoraMismatch(f"{path.name} has no lora_down/lora_A weights: not a LoRA file")
    ranks = {s[0] for s in downs}
    if len(ranks) > 1:
        raise LoraMismatch(f"{path.name} mixes ranks {sorted(ranks)}")
    blocks = {int(m.group(1)) for k in shapes if (m := re.search(r"blocks\.(\d+)\.", k))}
    return LoraInfo(path, ranks.pop(), max(blocks) + 1 if blocks else 0, len(shapes), shapes)


def _lora_prefix(shapes: dict[str, Any]) -> str:
    return "lora_down" if any("lora_down" in k for k in shapes) else "lora_A"


# diffusers' module names (WanTransformer3DModel) -> the Wan names the checks and messages use
_DIFFUSERS_NAMES = {
    **{f"attn1.to_{p}": f"self_attn.{p}" for p in "qkv"}, "attn1.to_out.0": "self_attn.o",
    **{f"attn2.to_{p}": f"cross_attn.{p}" for p in "qkv"}, "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_MODULE = r"self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02]|attn[12]\.to_(?:[qkv]|out\.0)|ffn\.net\.0\.proj|ffn\.net\.2"


def check_fit(info: LoraInfo, transformer_config: Path) -> list[str]:
    """What in ``info`` does not fit the transformer described by ``transformer_config`` (empty: fits).

    Checked on the Wan key format (``diffusion_model.blocks.N.self_attn.q...``) as published, and on
    diffusers' names for the same modules (``transformer.blocks.N.attn1.to_q...``, which
    ``load_lora_weights`` takes as they are): the block count, and the width every attention and FFN
    projection's LoRA expects."""
    cfg = json.loads(Path(transformer_config).read_text())
    inner = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    ffn = int(cfg["ffn_dim"])
    layers = int(cfg["num_layers"])
    down, up = _lora_prefix(info.shapes), "lora_up" if _lora_prefix(info.shapes) == "lora_down" else "lora_B"
    problems: list[str] = []
    if info.blocks != layers:
        problems.append(f"LoRA for {info.blocks} blocks, the transformer has {layers}")
    # (module, expected input width, expected output width)
    expect = {**{f"{a}.{p}": (inner, inner) for a in ("self_attn", "cross_attn") for p in "qkvo"},
              "ffn.0": (inner, ffn), "ffn.2": (ffn, inner)}
    wrong: set[str] = set()
    seen = 0
    for key, shape in info.shapes.items():
        m = re.search(r"blocks\.\d+\.(" + _MODULE + r")\.(" + down + "|" + up + r")\.weight$", key)
        if not m:
            continue
        module = _DIFFUSERS_NAMES.get(m.group(1), m.group(1))
        if m.group(2) == down:
            seen += 1
            if shape[1] != expect[module][0]:
                wrong.add(f"{module} input {shape[1]} (model {expect[module][0]})")
        elif shape[0] != expect[module][1]:
            wrong.add(f"{module} output {shape[0]} (model {expect[module][1]})")
    if not seen:
        problems.append("no attention or FFN LoRA weights in the Wan (blocks.N.self_attn.q...) or diffusers "
                        "(blocks.N.attn1.to_q...) key format")
    problems += sorted(wrong)
    return problems

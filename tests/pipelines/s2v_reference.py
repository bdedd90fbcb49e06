"""Loads the official Wan2.2-S2V code (PyPI ``wan22``, installed with ``--no-deps`` by the test
extra) as a reference for the parity tests, without running its package ``__init__`` files.

``wan/__init__.py`` imports every pipeline (decord, torchvision, easydict, CUDA-only code) and
``wan/modules/s2v/__init__.py`` imports librosa; the modules the S2V denoiser and the audio
features need import none of that. So this registers bare package objects for ``wan``,
``wan.modules``, ``wan.modules.s2v`` and ``wan.distributed`` (pointing at the installed files),
and imports the leaf modules through them. ``flash_attention`` (CUDA + flash-attn only) is
replaced by exact full attention with ``monkeypatch``; the package itself is never edited.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

PACKAGES = ("wan", "wan.modules", "wan.modules.s2v", "wan.distributed")


def _root() -> Path:
    spec = importlib.util.find_spec("wan")
    if spec is None or spec.origin is None:
        pytest.skip("the reference package wan22 is not installed (pip install --no-deps wan22==2.2.11)")
    return Path(spec.origin).parent


def full_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                   causal=False, window_size=(-1, -1), deterministic=False, dtype=None, version=None):
    """flash_attention's contract ((B, L, heads, d) in and out) as exact float32 attention. The
    callers here pass full-length ``k_lens`` (one sequence length per batch), so no mask."""
    out = F.scaled_dot_product_attention(q.float().transpose(1, 2), k.float().transpose(1, 2),
                                         v.float().transpose(1, 2))
    return out.transpose(1, 2).type_as(v)


def load(monkeypatch: pytest.MonkeyPatch, module: str) -> types.ModuleType:
    """``wan.<module>`` imported without its packages' ``__init__``; ``flash_attention`` replaced."""
    pytest.importorskip("einops")
    root = _root()
    for name in PACKAGES:
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            monkeypatch.setitem(sys.modules, name, pkg)
    mod = importlib.import_module(f"wan.{module}")
    for name in ("wan.modules.model", "wan.modules.s2v.model_s2v", "wan.modules.s2v.motioner"):
        if name in sys.modules:
            monkeypatch.setattr(sys.modules[name], "flash_attention", full_attention)
    return mod


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Every parameter drawn at random: upstream zero-initialises the head, the audio injector's
    output and the motion projections, which would hide whole paths from a comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)

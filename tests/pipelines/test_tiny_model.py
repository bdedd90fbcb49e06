"""The embedded tiny model builds offline, deterministically, and reloads from disk."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from wanflash.pipelines import tiny


def test_session_model_on_disk(engine, tiny_settings) -> None:
    root = tiny_settings.data_dir / "models" / "tiny-wan"
    assert engine.root == root
    for part in ("model_index.json", "transformer", "transformer_2", "vae", "text_encoder", "tokenizer",
                 "t2v/model_index.json", "t2v/transformer", tiny.MARKER):
        assert (root / part).exists(), part
    # No leftovers from the temporary build directory (the tiny audio and audio-to-video models may sit beside it).
    assert {p.name for p in root.parent.iterdir()} - {"tiny-ltx2", "tiny-ace-step", "tiny-s2v"} == {"tiny-wan"}
    # Loaded back through from_pretrained: both experts and the T2V pair, components shared.
    assert engine.i2v.transformer is not engine.i2v.transformer_2
    assert engine.i2v.config.boundary_ratio == tiny.BOUNDARY_RATIO
    assert engine.t2v.transformer.config.in_channels == 16
    assert engine.i2v.transformer.config.in_channels == 36
    assert engine.t2v.vae is engine.i2v.vae and engine.t2v.text_encoder is engine.i2v.text_encoder


def test_build_is_offline_and_reused(tmp_path: Path, monkeypatch) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

    def no_network(*args, **kwargs):
        raise AssertionError("the tiny model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    root = tiny.ensure_tiny_model(tmp_path)
    stamp = (root / tiny.MARKER).stat().st_mtime_ns
    assert tiny.ensure_tiny_model(tmp_path) == root
    assert (root / tiny.MARKER).stat().st_mtime_ns == stamp  # not rebuilt

    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(root)
    fresh, _ = tiny.build_tiny_pipelines()
    # Seeded build: the saved weights are exactly what a fresh build makes.
    for name in ("transformer", "transformer_2", "vae", "text_encoder"):
        saved, new = getattr(pipe, name).state_dict(), getattr(fresh, name).state_dict()
        assert saved.keys() == new.keys()
        for key in saved:
            assert torch.equal(saved[key], new[key]), f"{name}.{key}"


def test_stale_model_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "models" / "tiny-wan"
    root.mkdir(parents=True)
    (root / "junk").write_text("half a model from an older recipe")
    built = tiny.ensure_tiny_model(tmp_path)
    assert built == root
    assert not (root / "junk").exists()
    assert (root / "model_index.json").is_file()
    assert sorted(p.name for p in root.parent.iterdir()) == ["tiny-wan"]


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def boom():
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "build_tiny_pipelines", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny.ensure_tiny_model(tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_tokenizer_is_local() -> None:
    tok = tiny._tokenizer()
    ids = tok("a cat dances zzzunknown")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.unk_token_id in ids

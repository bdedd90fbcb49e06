"""``wanflash generate`` in-process: validation errors exit 2, a run writes playable files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.published_layouts import Layouts
from wanflash.cli import main
from wanflash.media.probe import probe_file


@pytest.fixture
def frame_png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (360, 480, 3), dtype=np.uint8)).save(path)
    return path


def test_bad_size_exits_2_naming_the_parameter(tmp_path: Path, capsys) -> None:
    rc = main(["generate", "--prompt", "a cat", "--width", "100", "--height", "100",
               "--data-dir", str(tmp_path), "-o", str(tmp_path / "x.mp4")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "width" in err and "invalidDimensions" in err
    assert not (tmp_path / "x.mp4").exists()


def test_unreadable_image_exits_2(tmp_path: Path, capsys) -> None:
    rc = main(["generate", "--prompt", "a cat", "--image", str(tmp_path / "missing.png"),
               "--data-dir", str(tmp_path), "-o", str(tmp_path / "x.mp4")])
    assert rc == 2
    assert "inputs.frameImages" in capsys.readouterr().err


def test_generate_writes_playable_files(tmp_path: Path, frame_png: Path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    out = tmp_path / "out" / "clip.mov"
    rc = main(["generate", "--image", str(frame_png), "--prompt", "a cat dances", "--duration", "2",
               "--format", "mov", "--quality", "60", "--seed", "1234", "--number-results", "2",
               "--data-dir", str(tmp_path / "data"), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    paths = [out.with_name("clip-1.mov"), out.with_name("clip-2.mov")]
    for seed, path in zip((1234, 1235), paths):
        assert f"seed {seed}: {path}" in captured.out
        info = probe_file(path)
        # 480x360 is 4:3: the closest 720p size is 1088x832.
        assert (info.video_codec, info.width, info.height) == ("h264", 1088, 832)
        assert abs(info.frames - 32) <= 1
        assert info.fps == pytest.approx(16)
        assert (info.audio_codec, info.audio_rate) == ("aac", 48000)  # native audio (the tiny default backend) is on by default
    # tqdm bars on stderr: the tiny model builds (fresh data dir), then one bar per stage.
    assert "building the tiny model: 100%" in captured.err
    assert "building the tiny audio model: 100%" in captured.err
    assert re.search(r"denoise: 100%\S* \d+/\d+", captured.err), captured.err[-2000:]
    assert re.search(r"audio: 100%\S* \d+/\d+", captured.err), captured.err[-2000:]
    assert "encode: 100%" in captured.err and "2/2" in captured.err
    assert (tmp_path / "data" / "models" / "tiny-wan" / "model_index.json").is_file()


# -- the published layouts (toy width): `wanflash generate` runs on every one of them


LAYOUTS = [  # (profile, layout, with the LoRA repo, requests: with an image / text only)
    ("wan2.2-ti2v-5b", "ti2v_5b", False, (True, False)),
    ("wan2.2-ti2v-5b", "ti2v_5b_distilled", False, (True,)),
    ("wan2.2-i2v-a14b", "i2v_a14b", True, (True,)),
    # The t2v/ experts (image-to-video on these weights is the layout above).
    ("wan2.2-i2v-a14b", "i2v_a14b_t2v", True, (False,)),
]


@pytest.mark.parametrize("profile,layout,loras,requests", LAYOUTS, ids=[x[1] for x in LAYOUTS])
def test_generate_on_the_published_layouts(published: Layouts, tmp_path: Path, frame_png: Path, capsys,
                                           monkeypatch: pytest.MonkeyPatch, profile: str, layout: str, loras: bool,
                                           requests: tuple[bool, ...]) -> None:
    import dataclasses

    from wanflash.pipelines.profiles import PROFILES

    pytest.importorskip("diffusers")
    # Toy widths at toy sizes: generate at most 64x64 (on the profile's grid), then resize as always.
    monkeypatch.setitem(PROFILES, profile, dataclasses.replace(PROFILES[profile], max_area=64 * 64))
    monkeypatch.setenv("WANFLASH_PROFILE", profile)
    monkeypatch.setenv("WANFLASH_WEIGHTS_DIR", str(getattr(published, layout)))
    monkeypatch.setenv("WANFLASH_AUDIO_MODEL", "none")
    monkeypatch.setenv("WANFLASH_DEVICE", "cpu")
    if loras:
        monkeypatch.setenv("WANFLASH_LORA_DIR", str(published.loras))
    fps = PROFILES[profile].fps
    for with_image in requests:
        out = tmp_path / f"{layout}-{'i2v' if with_image else 't2v'}.mp4"
        image = ["--image", str(frame_png)] if with_image else ["--resolution", "720p"]
        rc = main(["generate", *image, "--prompt", "a cat dances", "--duration", "2", "--seed", "7", "--no-audio",
                   "--data-dir", str(tmp_path / "data"), "-o", str(out)])
        captured = capsys.readouterr()
        assert rc == 0, captured.err[-3000:]
        info = probe_file(out)
        assert info.video_codec == "h264" and abs(info.frames - 2 * fps) <= 1
        assert info.fps == pytest.approx(fps)

"""``wanflash generate`` in-process: validation errors exit 2, a run writes playable files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

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
        assert (info.audio_codec, info.audio_rate) == ("aac", 48000)  # native audio (tiny LTX-2) is on by default
    # tqdm bars on stderr: the tiny model builds (fresh data dir), then one bar per stage.
    assert "building the tiny model: 100%" in captured.err
    assert "building the tiny audio model: 100%" in captured.err
    assert re.search(r"denoise: 100%\S* \d+/\d+", captured.err), captured.err[-2000:]
    assert re.search(r"audio: 100%\S* \d+/\d+", captured.err), captured.err[-2000:]
    assert "encode: 100%" in captured.err and "2/2" in captured.err
    assert (tmp_path / "data" / "models" / "tiny-wan" / "model_index.json").is_file()

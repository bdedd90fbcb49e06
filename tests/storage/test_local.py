"""Local store: atomic keyed writes, key safety, content types."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanflash.storage.base import InvalidKey, content_type_for
from wanflash.storage.local import LocalStore


def test_put_and_read(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "media")
    s.put_bytes("outputs/t/0.mp4", b"abc")
    assert s.read_bytes("outputs/t/0.mp4") == b"abc" and s.exists("outputs/t/0.mp4")
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 3_000_000)
    s.put_file("uploads/u.bin", src)
    assert s.read_bytes("uploads/u.bin") == src.read_bytes()
    assert not [p for p in (tmp_path / "media").rglob(".tmp-*")]  # no temp files left


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "", ".hidden", "a/../b"])
def test_unsafe_keys_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        LocalStore(tmp_path).put_bytes(key, b"")


def test_content_types() -> None:
    assert content_type_for("a/0.mp4") == "video/mp4"
    assert content_type_for("a/0.webm") == "video/webm"
    assert content_type_for("a/0.mov") == "video/quicktime"
    assert content_type_for("u/x.png") == "image/png"

"""Settings are read once from WANFLASH_* variables and frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wanflash.config import Settings, load_settings


def test_defaults_are_the_embedded_mode() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.profile == "tiny"
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.data_dir == Path(".wanflash")
    assert s.allow_loopback_fetch is False
    assert s.executor == "subprocess"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("WANFLASH_ALLOW_LOOPBACK_FETCH", "1")
    monkeypatch.setenv("WANFLASH_PORT", "9001")
    s = load_settings()
    assert s.api_key_list == ["k1", "k2"]
    assert s.allow_loopback_fetch is True
    assert s.port == 9001
    assert s.base_url == "http://127.0.0.1:9001"


def test_overrides_win_and_none_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_PORT", "9001")
    s = load_settings(port=7000, host=None)
    assert s.port == 7000 and s.host == "127.0.0.1"


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]


def test_bad_profile_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_PROFILE", "wan9")
    with pytest.raises(ValidationError):
        load_settings()


def test_only_config_reads_the_environment() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "wanflash"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "config.py" and ("os.environ[" in p.read_text() or "os.getenv" in p.read_text()
                                      or "environ.get(" in p.read_text())
    ]
    assert offenders == []

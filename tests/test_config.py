"""Settings are read once from WANFLASH_* variables, composed of one frozen section per component."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wanflash.config import AudioConfig, Settings, StorageConfig, load_settings


def test_defaults_are_the_embedded_mode() -> None:
    s = Settings(_env_file=None)
    assert s.engine.profile == "tiny"
    assert s.server.host == "127.0.0.1" and s.server.port == 8000
    assert s.data_dir == Path(".wanflash")
    assert s.limits.allow_loopback_fetch is False
    assert s.engine.executor == "subprocess"
    assert s.storage.backend == "local" and s.audio.model == "ace-step"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("WANFLASH_ALLOW_LOOPBACK_FETCH", "1")
    monkeypatch.setenv("WANFLASH_PORT", "9001")
    s = load_settings()
    assert s.server.api_key_list == ["k1", "k2"]
    assert s.limits.allow_loopback_fetch is True
    assert s.server.port == 9001
    assert s.server.base_url == "http://127.0.0.1:9001"


# Today's variable names, each landing in its component's section under its short name.
VARIABLES = [
    ("WANFLASH_DATA_DIR", "/srv/wf", lambda s: s.data_dir == Path("/srv/wf")),
    ("WANFLASH_PROFILE", "wan2.2-ti2v-5b", lambda s: s.engine.profile == "wan2.2-ti2v-5b"),
    ("WANFLASH_MEMORY", "group_offload", lambda s: s.engine.memory_setting == "group_offload"),
    ("WANFLASH_AUDIO_MODEL", "none", lambda s: s.audio.model == "none"),
    ("WANFLASH_AUDIO_CPU_OFFLOAD", "group", lambda s: s.audio.cpu_offload == "group"),
    ("WANFLASH_A2V_STEPS", "7", lambda s: s.a2v.steps == 7),
    ("WANFLASH_DATABASE_URL", "postgresql://db/wf", lambda s: s.jobs.database_url == "postgresql://db/wf"),
    ("WANFLASH_MAX_INPUT_BYTES", "1234", lambda s: s.limits.max_input_bytes == 1234),
    ("WANFLASH_S3_PATH_STYLE", "1", lambda s: s.storage.path_style is True),
    ("WANFLASH_URL_SECRET", "sekrit", lambda s: s.secrets.url_secret == "sekrit"),
    ("WANFLASH_PROMPT_EXTEND_URL", "http://llm:8001/v1", lambda s: s.prompt_extend.url == "http://llm:8001/v1"),
    ("WANFLASH_PROMPT_EXTEND_MODEL", "qwen3", lambda s: s.prompt_extend.model == "qwen3"),
    ("WANFLASH_SAFETY_THRESHOLD", "0.7", lambda s: s.safety.threshold == 0.7),
    ("WANFLASH_SAFETY_DEVICE", "cuda:1", lambda s: s.safety.device == "cuda:1" and s.engine.device == "auto"),
    ("WANFLASH_WORKER_METRICS_PORT", "9400", lambda s: s.observability.worker_metrics_port == 9400),
]


@pytest.mark.parametrize(("name", "value", "check"), VARIABLES, ids=[v[0] for v in VARIABLES])
def test_each_variable_keeps_its_name(monkeypatch: pytest.MonkeyPatch, name: str, value: str, check) -> None:
    monkeypatch.setenv(name, value)
    assert check(load_settings())
    flat = name.removeprefix("WANFLASH_").lower()
    assert check(Settings(**{flat: value})), "the flat keyword names the same setting"


def test_storage_backend_and_bucket_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_STORAGE", "s3")
    with pytest.raises(ValidationError, match="WANFLASH_S3_BUCKET"):
        load_settings()
    monkeypatch.setenv("WANFLASH_S3_BUCKET", "media")
    s = load_settings()
    assert (s.storage.backend, s.storage.bucket) == ("s3", "media")
    assert StorageConfig().backend == "s3", "a component's section reads its own variables alone"
    flat = Settings(storage="local", s3_bucket="other")  # "storage" the variable, not the section
    assert (flat.storage.backend, flat.storage.bucket) == ("local", "other")


def test_env_file_reaches_every_section(tmp_path: Path) -> None:
    env = tmp_path / "wanflash.env"
    env.write_text("WANFLASH_DATA_DIR=/srv/x\nWANFLASH_PROFILE=wan2.2-i2v-a14b\nWANFLASH_AUDIO_MODEL=ltx2\n"
                   "WANFLASH_SAFETY_DETECTOR=nudenet\nUNRELATED=1\n")
    s = load_settings(env)
    assert s.data_dir == Path("/srv/x") and s.engine.profile == "wan2.2-i2v-a14b"
    assert s.audio.model == "ltx2" and s.safety.detector == "nudenet"


def test_overrides_win_and_none_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_PORT", "9001")
    s = load_settings(port=7000, host=None)
    assert s.server.port == 7000 and s.server.host == "127.0.0.1"


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="profle"):
        Settings(profle="tiny")
    with pytest.raises(ValueError, match="audio_modle"):
        Settings().replace(audio_modle="none")


def test_replace_routes_and_validates() -> None:
    s = Settings(profile="tiny")
    t = s.replace(device="cpu", audio_model="none", s3_prefix="wf/", data_dir="/d")
    assert (t.engine.device, t.audio.model, t.storage.prefix, t.data_dir) == ("cpu", "none", "wf/", Path("/d"))
    assert s.engine.device == "auto" and s.audio is not t.audio and s.safety is t.safety
    with pytest.raises(ValidationError):
        s.replace(audio_model="mp3")
    with pytest.raises(ValidationError, match="contradicts"):
        s.replace(memory="full", cpu_offload="model")


def test_json_round_trip_does_not_reread_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker slots get their settings as JSON on stdin: the parent's values, whatever the child's environment."""
    s = Settings(profile="wan2.2-ti2v-5b", audio_model="none", s3_region="eu-west-1")
    monkeypatch.setenv("WANFLASH_AUDIO_MODEL", "ltx2")
    monkeypatch.setenv("WANFLASH_PROFILE", "tiny")
    assert Settings.model_validate_json(s.model_dump_json()) == s


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.data_dir = Path("x")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.server.port = 1  # type: ignore[misc]


def test_bad_profile_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_PROFILE", "wan9")
    with pytest.raises(ValidationError):
        load_settings()


def test_a_section_is_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFLASH_AUDIO_STEPS", "3")
    assert AudioConfig().steps == 3 and AudioConfig(steps=5).steps == 5


def test_only_config_reads_the_environment() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "wanflash"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "config.py" and ("os.environ[" in p.read_text() or "os.getenv" in p.read_text()
                                      or "environ.get(" in p.read_text())
    ]
    assert offenders == []

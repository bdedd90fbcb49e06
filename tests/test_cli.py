"""``wanflash --help`` lists the commands; ``wanflash doctor`` says what is missing and exits 1 for it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.records import no_webhooks
from tests.pipelines.published_layouts import LORA_FILES, Layouts, diffusers_format_lora, lora_state_dict, reference
from wanflash.cli import main


def test_help_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "wanflash.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for command in ("serve", "api", "worker", "migrate", "generate", "keys", "doctor"):
        assert command in proc.stdout
    keys = subprocess.run([sys.executable, "-m", "wanflash.cli", "keys", "--help"], capture_output=True,
                          text=True, timeout=60)
    for action in ("create", "list", "revoke"):
        assert action in keys.stdout


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, str], str]:
    rc = main(["doctor", *argv])
    out = capsys.readouterr().out
    status = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("ok", "WARN", "FAIL"):
            status[parts[1]] = parts[0]
    return rc, status, out


def test_doctor_ready_for_the_tiny_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path / "data"), "--profile", "tiny")
    assert rc == 0, out
    for name in ("python", "torch", "diffusers", "transformers", "cuda", "weights", "codecs", "database"):
        assert status.get(name) == "ok", out
    assert "MP4, WEBM, MOV encode with audio" in out
    assert not (tmp_path / "data").exists()  # the doctor looks, it does not create


def test_doctor_names_missing_weights_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "wan2.2-i2v-a14b")
    assert rc == 1
    assert status["weights"] == "FAIL"
    assert "WANFLASH_WEIGHTS_DIR" in out and "fix:" in out


def test_doctor_reports_missing_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "tiny")
    assert rc == 1
    assert status["torch"] == "FAIL" and "make setup" in out


def test_doctor_reports_a_corrupt_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "wanflash.sqlite3").write_bytes(b"this is not a database" * 100)
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "tiny")
    assert rc == 1 and status["database"] == "FAIL", out


def test_doctor_reads_a_live_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wanflash.api.auth import create_key
    from wanflash.jobs.store import SqliteJobSource

    store = SqliteJobSource(tmp_path / "wanflash.sqlite3", outbox=no_webhooks)
    create_key(store)
    store.close()
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "tiny")
    assert status["database"] == "ok" and "1 active API key" in out, out
    with sqlite3.connect(tmp_path / "wanflash.sqlite3") as db:  # still a valid database afterwards
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0


def test_doctor_reports_an_unreachable_postgres(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANFLASH_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/wanflash")
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "tiny")
    assert rc == 1
    assert status["database"] == "FAIL" and "wanflash migrate" in out


def test_doctor_names_missing_audio_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model_index.json").write_text("{}")  # video weights present: only audio is missing
    monkeypatch.setenv("WANFLASH_WEIGHTS_DIR", str(weights))
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "wan2.2-ti2v-5b")
    assert rc == 1 and status["audio"] == "FAIL"
    assert "WANFLASH_AUDIO_WEIGHTS_DIR" in out and "WANFLASH_AUDIO_MODEL=none" in out
    assert "ACE-Step" in out  # the default backend's weights are what it asks for
    monkeypatch.setenv("WANFLASH_AUDIO_MODEL", "none")
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "wan2.2-ti2v-5b")
    assert status["audio"] == "ok"


def test_doctor_prints_the_memory_plan_for_the_detected_gpu(tmp_path: Path) -> None:
    from wanflash.config import Settings
    from wanflash.doctor import check_memory

    gpu = {"available": True, "devices": [{"index": 0, "name": "RTX 4090", "total_bytes": 24 * 1024**3}]}
    a14b = Settings(data_dir=tmp_path, profile="wan2.2-i2v-a14b", device="auto")
    [check] = check_memory(a14b, gpu, host=256 * 1024**3)
    assert check.status == "ok" and check.detail.startswith("plan group_offload on cuda:0 (24 GiB)")
    assert "estimated peak" in check.detail and "GiB of weights in host memory" in check.detail
    [small] = check_memory(a14b, gpu, host=32 * 1024**3)  # 64 GiB of offloaded experts do not fit in 32 GiB
    assert small.status == "warn" and "32 GiB of RAM" in small.detail
    forced = check_memory(Settings(data_dir=tmp_path, profile="wan2.2-i2v-a14b", memory="full"), gpu)
    assert forced[-1].status == "fail" and "does not fit" in forced[-1].detail
    old = check_memory(Settings(data_dir=tmp_path, profile="wan2.2-ti2v-5b", cpu_offload="model"), gpu,
                       host=256 * 1024**3)
    assert old[0].status == "warn" and "WANFLASH_MEMORY=model_offload" in old[0].fix
    assert old[1].detail.startswith("plan model_offload")
    no_gpu = check_memory(Settings(data_dir=tmp_path, profile="wan2.2-i2v-a14b"), {"available": False})
    assert no_gpu[0].status == "warn" and "24 GB: group_offload" in no_gpu[0].detail
    [tiny] = check_memory(Settings(data_dir=tmp_path, profile="tiny", device="cpu"), None)
    assert tiny.status == "ok" and tiny.detail.startswith("plan full")


def test_doctor_states_the_audio_backends_licence(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model_index.json").write_text("{}")
    monkeypatch.setenv("WANFLASH_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("WANFLASH_AUDIO_WEIGHTS_DIR", str(weights))
    for model, hears, licence in (("ace-step", "the prompt only", "MIT"),
                                  ("ltx2", "the picture", "LTX-2 Community License")):
        monkeypatch.setenv("WANFLASH_AUDIO_MODEL", model)
        _, status, out = doctor(capsys, "--data-dir", str(tmp_path), "--profile", "wan2.2-ti2v-5b")
        line = next(x for x in out.splitlines() if x.split()[1:2] == ["audio"])
        assert status["audio"] == "ok" and hears in line and licence in line, line


# -- doctor opens the LoRA files (toy-width copies of the published layouts)



def lora_checks(tmp_path: Path, weights: Path, loras: Path) -> dict[str, object]:
    from wanflash.config import Settings
    from wanflash.doctor import check_weights

    settings = Settings(data_dir=tmp_path, profile="wan2.2-i2v-a14b", weights_dir=weights, lora_dir=loras,
                        audio_model="none")
    return {c.name: c for c in check_weights(settings) if c.name.startswith("lora")}


def test_doctor_reads_the_lora_files_and_matches_them_to_experts(published: Layouts, tmp_path: Path) -> None:
    checks = lora_checks(tmp_path, published.i2v_a14b_t2v, published.loras)
    assert set(checks) == {"lora i2v high", "lora i2v low", "lora t2v high", "lora t2v low"}
    for (_name, check), file in zip(sorted(checks.items()), [LORA_FILES[0], LORA_FILES[1], LORA_FILES[2], LORA_FILES[3]]):
        assert check.status == "ok", check
        assert file in check.detail and "rank 4, 2 blocks" in check.detail, check
    assert "t2v/transformer_2" in checks["lora t2v low"].detail
    # Without t2v/, the t2v pair is named as unused rather than silently loaded somewhere.
    checks = lora_checks(tmp_path, published.i2v_a14b, published.loras)
    assert checks["lora i2v high"].status == "ok" and "lora t2v high" not in checks
    assert LORA_FILES[2] in checks["loras unused"].detail and LORA_FILES[3] in checks["loras unused"].detail


def test_doctor_fails_loras_that_do_not_fit(published: Layouts, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg = reference()["layouts"]["Wan-AI/Wan2.2-I2V-A14B-Diffusers"]["transformer"]
    bad = tmp_path / "bad"
    bad.mkdir()
    sd = lora_state_dict(cfg, i2v=True, seed=1)
    sd = {k: (v[:, :20].contiguous() if ".ffn.0.lora_down" in k else v) for k, v in sd.items()}  # another width
    save_file(sd, str(bad / "i2v_high.safetensors"))
    sd = lora_state_dict(cfg, i2v=True, seed=2)
    sd["diffusion_model.blocks.2.self_attn.q.lora_down.weight"] = sd["diffusion_model.blocks.1.self_attn.q.lora_down.weight"].clone()
    save_file(sd, str(bad / "i2v_low.safetensors"))
    checks = lora_checks(tmp_path, published.i2v_a14b, bad)
    assert checks["lora i2v high"].status == "fail" and "ffn.0 input 20 (model 24)" in checks["lora i2v high"].detail
    assert checks["lora i2v low"].status == "fail" and "3 blocks, the transformer has 2" in checks["lora i2v low"].detail
    # Two files for one expert: named, not guessed.
    (bad / "i2v_low.safetensors").unlink()
    save_file(lora_state_dict(cfg, i2v=True, seed=3), str(bad / "i2v_high_v2.safetensors"))
    save_file(lora_state_dict(cfg, i2v=True, seed=4), str(bad / "i2v_low.safetensors"))
    checks = lora_checks(tmp_path, published.i2v_a14b, bad)
    assert checks["loras"].status == "fail" and "i2v_high.safetensors, i2v_high_v2.safetensors" in checks["loras"].detail


def test_doctor_reads_diffusers_format_loras(published: Layouts, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg = reference()["layouts"]["Wan-AI/Wan2.2-I2V-A14B-Diffusers"]["transformer"]
    loras = tmp_path / "diffusers-loras"
    loras.mkdir()
    save_file(diffusers_format_lora(lora_state_dict(cfg, i2v=True, seed=1)), str(loras / "i2v_high.safetensors"))
    narrow = {k: (v[:, :20].contiguous() if "ffn.net.0.proj.lora_A" in k else v)
              for k, v in diffusers_format_lora(lora_state_dict(cfg, i2v=True, seed=2)).items()}
    save_file(narrow, str(loras / "i2v_low.safetensors"))
    checks = lora_checks(tmp_path, published.i2v_a14b, loras)
    assert checks["lora i2v high"].status == "ok" and "rank 4, 2 blocks" in checks["lora i2v high"].detail
    assert checks["lora i2v low"].status == "fail" and "ffn.0 input 20 (model 24)" in checks["lora i2v low"].detail


def test_doctor_says_what_inputs_audio_does(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path / "data"), "--profile", "tiny")
    assert status["a2v"] == "ok" and "toy Wan2.2-S2V" in out
    monkeypatch.setenv("WANFLASH_A2V_MODEL", "none")
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path / "data"), "--profile", "tiny")
    assert status["a2v"] == "ok" and "inputs.audio is muxed only" in out
    monkeypatch.delenv("WANFLASH_A2V_MODEL")
    monkeypatch.setenv("WANFLASH_A2V_WEIGHTS_DIR", str(tmp_path))
    rc, status, out = doctor(capsys, "--data-dir", str(tmp_path / "data"), "--profile", "tiny")
    assert rc == 1 and status["a2v"] == "FAIL" and "lacks transformer" in out

"""``wanflash doctor``: check this machine and configuration, say what is missing and how to fix it.

Checks: Python; torch (import, version), diffusers and transformers; CUDA (what torch sees,
against ``WANFLASH_DEVICE`` and the profile); the memory plan for the detected GPU with its
estimated peak; the profile's weights and, for profiles that take distilled LoRAs, every LoRA file
(its safetensors header: rank, blocks and widths against the expert it is matched to, the same
matching the loader uses); PyAV's encoders (by
encoding a short clip in every output format, audio included, the same way the service does);
the data directory (writable, free space); the database (integrity, task counts; opened
read-only, never created); the promptExtend backend's configuration. Exit status 1 when a
required check fails, 0 otherwise (warnings do not fail). Nothing here mutates state.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from wanflash.pipelines.profiles import get_profile

if TYPE_CHECKING:
    import argparse

    from wanflash.config import Settings

Status = Literal["ok", "warn", "fail"]
GiB = 1024**3
MIN_FREE_BYTES = 5 * GiB
TORCH_FIX = ("run `make setup` (installs the CPU wheel), or install the CUDA build of torch that matches your "
             "driver into .venv first and run `make run TORCH_SPEC=` (README: Installing torch)")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def check_python() -> list[Check]:
    v = sys.version_info
    ok = v >= (3, 11)
    return [Check("python", "ok" if ok else "fail", f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
                  None if ok else "use Python 3.11 or newer")]


def check_engine(settings: Settings) -> list[Check]:
    from wanflash.pipelines.environment import engine_info

    info = engine_info()
    out: list[Check] = []
    torch = info["torch"]
    if "error" in torch:
        out.append(Check("torch", "fail", f"cannot import torch: {torch['error']}", TORCH_FIX))
    else:
        out.append(Check("torch", "ok", torch["version"]))
    for name in ("diffusers", "transformers"):
        mod = info[name]
        if "error" in mod:
            out.append(Check(name, "fail", f"cannot import {name}: {mod['error']}",
                             "install the engine extra: `.venv/bin/pip install -e '.[engine]'` (make setup does)"))
        else:
            out.append(Check(name, "ok", mod["version"]))
    out.append(_cuda_check(settings, info.get("cuda")))
    return out + check_memory(settings, info.get("cuda"))


def check_memory(settings: Settings, cuda: dict[str, Any] | None, host: int | None = None) -> list[Check]:
    """The memory plan the engine would use on the detected GPU, and its estimated peak; ``host``:
    this machine's RAM in bytes (read from the OS when None)."""
    import os

    from wanflash.pipelines.memory import LAYOUTS, choose_plan, estimate

    engine = settings.engine
    setting = engine.memory_setting
    out: list[Check] = []
    if engine.cpu_offload != "none":
        out.append(Check("memory setting", "warn", f"WANFLASH_CPU_OFFLOAD={engine.cpu_offload} is deprecated; "
                         f"it means WANFLASH_MEMORY={setting}", f"set WANFLASH_MEMORY={setting} instead"))
    devices = (cuda or {}).get("devices") or []
    index = int(engine.device.split(":")[1]) if engine.device.startswith("cuda:") else 0
    gpu = next((d for d in devices if d["index"] == index), None)
    if engine.device == "cpu" or not (cuda or {}).get("available"):
        gpu = None
    weights = engine.weights_dir
    t2v = weights is not None and (Path(weights) / "t2v" / "model_index.json").is_file()
    opts = dict(setting=setting, fp8=engine.fp8_weights, vae_tiling=engine.vae_tiling,
                native_1080p=engine.native_1080p, t2v=t2v)
    if engine.profile not in LAYOUTS:
        plan = choose_plan(engine.profile, gpu["total_bytes"] if gpu else None, **opts)  # type: ignore[arg-type]
        return out + [Check("memory", "ok", f"plan {plan.label()} ({plan.reason})")]
    if gpu is None:
        plans = {g: choose_plan(engine.profile, g * GiB, **opts) for g in (24, 48, 80)}  # type: ignore[arg-type]
        picks = "; ".join(f"{g} GB: {plan.label()} "
                          f"({estimate(engine.profile, plan, t2v=t2v).gpu_bytes / GiB:.1f} GiB)"
                          for g, plan in plans.items())
        return out + [Check("memory", "warn", f"no GPU to plan for; on a GPU of {picks}",
                            "run on a CUDA GPU (README: Real weights, memory plans)")]
    plan = choose_plan(engine.profile, gpu["total_bytes"], **opts)  # type: ignore[arg-type]
    est = estimate(engine.profile, plan, t2v=t2v)
    detail = (f"plan {plan.label()} on cuda:{gpu['index']} ({gpu['total_bytes'] / GiB:.0f} GiB): estimated peak "
              f"{est.gpu_bytes / GiB:.1f} GiB in {est.stage}, {est.host_bytes / GiB:.0f} GiB of weights in host "
              f"memory; {plan.reason}")
    if plan.reason.startswith("does not fit"):
        return out + [Check("memory", "fail", detail, "set WANFLASH_MEMORY=auto (or group_offload), or "
                            "WANFLASH_FP8_WEIGHTS=1")]
    if host is None:
        try:
            host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            host = None
    if host is not None and est.host_bytes > host - 4 * GiB:
        return out + [Check("memory", "warn", detail + f"; but this machine has {host / GiB:.0f} GiB of RAM",
                            "add RAM, or drop the t2v/ experts, or WANFLASH_FP8_WEIGHTS=1 (halves them)")]
    return out + [Check("memory", "ok", detail)]


def _cuda_check(settings: Settings, cuda: dict[str, Any] | None) -> Check:
    wants_cuda = settings.engine.device.startswith("cuda")
    if cuda is None:
        return Check("cuda", "fail" if wants_cuda else "warn", "unknown: torch is not importable", TORCH_FIX)
    if cuda.get("available"):
        devices = "; ".join(f"cuda:{d['index']} {d['name']} ({d['total_bytes'] / GiB:.1f} GiB, sm {d['capability']})"
                            for d in cuda["devices"])
        return Check("cuda", "ok", f"CUDA {cuda['built_with']}: {devices}")
    why = cuda.get("error") or ("this torch build has no CUDA support" if not cuda.get("built_with")
                                else f"torch was built with CUDA {cuda['built_with']} but sees no GPU")
    fix = ("install a CUDA build of torch (README: Installing torch)" if not cuda.get("built_with")
           else "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    if wants_cuda:
        return Check("cuda", "fail", f"WANFLASH_DEVICE={settings.engine.device} but {why}", fix)
    if get_profile(settings.engine.profile).loader != "tiny":
        return Check("cuda", "warn",
                     f"no GPU ({why}): profile {settings.engine.profile} on the CPU is impractically slow", fix)
    return Check("cuda", "ok", f"no GPU ({why}); the tiny profile runs on the CPU")


def check_weights(settings: Settings) -> list[Check]:
    from wanflash.pipelines.registry import WeightsNotFound, weights_root

    profile = get_profile(settings.engine.profile)
    if profile.loader == "tiny":
        from wanflash.pipelines.tiny import is_built, tiny_model_dir

        where = tiny_model_dir(settings.data_dir)
        if is_built(settings.data_dir):
            return [Check("weights", "ok", f"tiny model at {where}")]
        return [Check("weights", "ok", f"tiny model not built yet; built offline on first use at {where} (seconds)")]
    try:
        root = weights_root(settings)
    except WeightsNotFound as exc:
        return [Check("weights", "fail", str(exc),
                      "download the diffusers-format weights for the profile and set WANFLASH_WEIGHTS_DIR "
                      "(README: Real weights)")]
    out = [Check("weights", "ok", f"{settings.engine.profile} at {root}")]
    has_t2v = (root / "t2v" / "model_index.json").is_file()
    if profile.t2v == "directory" and not has_t2v:
        out.append(Check("weights t2v", "warn", f"no {root / 't2v'}: requests without an image fail with "
                         "textToVideoUnavailable", "add a Wan2.2-T2V-A14B-Diffusers directory as t2v/"))
    if profile.uses_loras:
        out += check_loras(settings, root, has_t2v)
    return out + check_audio_weights(settings)


def check_loras(settings: Settings, root: Path, has_t2v: bool) -> list[Check]:
    """Open every LoRA file's header, match it to its expert as the loader will, check it fits that expert."""
    from wanflash.pipelines.loras import COMPONENT, LoraMismatch, assign, check_fit, inspect_lora, lora_files

    lora = settings.engine.lora_dir
    if lora is None:
        return [Check("loras", "warn", "WANFLASH_LORA_DIR is not set: the profile runs 4 steps, which needs "
                      "4-step distilled LoRAs (or distilled weights)", "set WANFLASH_LORA_DIR")]
    fix = ("point WANFLASH_LORA_DIR at the distilled LoRAs for these weights, e.g. lightx2v/Wan2.2-Distill-Loras "
           "(README: Real weights)")
    if not Path(lora).is_dir():
        return [Check("loras", "fail", f"WANFLASH_LORA_DIR={lora} is not a directory", fix)]
    pipes = {"i2v": root} | ({"t2v": root / "t2v"} if has_t2v else {})
    experts = [(task, e) for task, d in pipes.items() for e in ("high", "low")
               if (d / COMPONENT[e] / "config.json").is_file()]
    try:
        chosen = assign(Path(lora), experts)  # type: ignore[arg-type]
    except LoraMismatch as exc:
        return [Check("loras", "fail", str(exc), fix)]
    out: list[Check] = []
    for (task, expert), f in chosen.items():
        name = f"lora {task} {expert}"
        try:
            info = inspect_lora(f.path)
            problems = check_fit(info, pipes[task] / COMPONENT[expert] / "config.json")
        except Exception as exc:  # an unreadable file is a finding
            out.append(Check(name, "fail", f"{f.path.name}: cannot read it ({type(exc).__name__}: {exc})", fix))
            continue
        detail = (f"{f.path.name} -> {task}/{COMPONENT[expert]}: rank {info.rank}, {info.blocks} blocks, "
                  f"{info.keys} keys")
        if problems:
            out.append(Check(name, "fail", f"{detail}; does not fit: {'; '.join(problems)}", fix))
        else:
            out.append(Check(name, "ok", detail))
    unused = sorted({p.name for p in lora_files(Path(lora))} - {f.path.name for f in chosen.values()})
    if unused:
        out.append(Check("loras unused", "ok", f"{', '.join(unused)} (no expert of these weights takes them)"))
    return out


def check_audio_weights(settings: Settings) -> list[Check]:
    """Native audio on a real profile: which backend, under which licence, hearing what; the service
    refuses to start without the backend's weights."""
    from wanflash.pipelines.audio import BACKENDS
    from wanflash.pipelines.registry import WeightsNotFound, audio_weights_root

    if settings.audio.model == "none":
        return [Check("audio weights", "ok", "WANFLASH_AUDIO_MODEL=none: requests that want generated "
                      "audio are refused with unsupportedAudio")]
    info = BACKENDS[settings.audio.model]
    try:
        root = audio_weights_root(settings)
    except WeightsNotFound as exc:
        return [Check("audio weights", "fail", str(exc),
                      f"download the {info.weights} and set WANFLASH_AUDIO_WEIGHTS_DIR, "
                      "or set WANFLASH_AUDIO_MODEL=none (README: Audio)")]
    hears = "the picture and the prompt" if info.conditioning == "video+prompt" else "the prompt only, not the picture"
    return [Check("audio weights", "ok", f"WANFLASH_AUDIO_MODEL={settings.audio.model} at {root}; "
                  f"hears {hears}; licence: {info.licence}")]


def check_a2v(settings: Settings) -> list[Check]:
    """What ``inputs.audio`` does on this configuration: Wan2.2-S2V follows the track, or muxing only."""
    from wanflash.pipelines.registry import S2V_PARTS, a2v_mode

    if a2v_mode(settings) == "mux":
        why = ("WANFLASH_A2V_MODEL=none" if settings.a2v.model == "none"
               else "no WANFLASH_A2V_WEIGHTS_DIR")
        return [Check("a2v", "ok", f"{why}: inputs.audio is muxed only (the picture does not follow the track)")]
    root = settings.a2v.weights_dir
    if root is None:  # tiny: the toy S2V, built on first use
        return [Check("a2v", "ok", "toy Wan2.2-S2V (random weights, built on first use): requests with an image "
                      "and inputs.audio are rendered from the track")]
    missing = [p for p in S2V_PARTS if not (Path(root) / p).is_dir()]
    if missing:
        return [Check("a2v", "fail", f"WANFLASH_A2V_WEIGHTS_DIR={root} lacks {', '.join(missing)}",
                      "lay out Wan2.2-S2V-14B as the README's Audio section says, or set WANFLASH_A2V_MODEL=none")]
    return [Check("a2v", "ok", f"Wan2.2-S2V at {root}: requests with an image and inputs.audio follow the track")]


def check_codecs() -> list[Check]:
    """Encode 8 frames (and a second of audio) in every output format, as the service would."""
    import av
    import numpy as np

    from wanflash.formats import OUTPUT_FORMATS
    from wanflash.media.encode import encode_video
    from wanflash.media.track import AudioTrack

    frames = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    track = AudioTrack(samples=np.zeros((1, 16000), dtype=np.float32), rate=16000)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wanflash-doctor-") as tmp:
        for fmt, suffix in ((f.name, f.suffix) for f in OUTPUT_FORMATS.values()):
            try:
                encode_video(frames, Path(tmp) / f"probe{suffix}", fps=16, fmt=fmt, quality=80, audio=track)
            except Exception as exc:
                failed.append(f"{fmt}: {type(exc).__name__}: {exc}")
    ffmpeg = ".".join(str(x) for x in av.library_versions.get("libavcodec", ()))
    if failed:
        return [Check("codecs", "fail", "; ".join(failed),
                      "install PyAV from its wheels (`pip install --force-reinstall av`): they bundle FFmpeg with "
                      "libx264, libvpx (VP9), AAC and libopus; a source build needs an FFmpeg built with them")]
    return [Check("codecs", "ok", f"PyAV {av.__version__} (libavcodec {ffmpeg}): "
                  f"{', '.join(OUTPUT_FORMATS)} encode with audio (H.264+AAC, VP9+Opus)")]


def check_data_dir(settings: Settings) -> list[Check]:
    data = Path(settings.data_dir)
    probe = data if data.exists() else next((p for p in data.absolute().parents if p.exists()), Path("/"))
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".wanflash-doctor-"):
            pass
    except OSError as exc:
        return [Check("data dir", "fail", f"{probe} is not writable: {exc}",
                      "choose another WANFLASH_DATA_DIR (or --data-dir) or fix its permissions")]
    free = shutil.disk_usage(probe).free
    detail = f"{data.absolute()} ({'exists' if data.exists() else 'created on first start'}), {free / GiB:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return [Check("data dir", "warn", detail, "free disk space: outputs, inputs and models are stored there")]
    return [Check("data dir", "ok", detail)]


def check_postgres(settings: Settings) -> list[Check]:
    """Distributed mode: the server answers and the schema is there (``wanflash migrate``)."""
    try:
        import psycopg

        # A direct connection with a short timeout: the job source's pool would wait 30 s for a dead server.
        with psycopg.connect(settings.jobs.database_url or "", connect_timeout=5) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM wanflash_tasks GROUP BY state").fetchall()
            counts: dict[str, int] = dict(rows)
    except Exception as exc:  # driver missing, server down, schema absent: all reported the same way
        return [Check("database", "fail", f"PostgreSQL ({type(exc).__name__}): {exc}".strip(),
                      "install the postgres extra, check WANFLASH_DATABASE_URL, run `wanflash migrate`")]
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
    return [Check("database", "ok", f"PostgreSQL: {summary}")]


def check_database(settings: Settings) -> list[Check]:
    from wanflash.jobs.source import db_path

    if settings.jobs.database_url:
        return check_postgres(settings)
    path = db_path(settings.data_dir)
    if not path.exists():
        return [Check("database", "ok", f"{path} does not exist yet; created on first start")]
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            counts = dict(db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
            keys = db.execute("SELECT COUNT(*) FROM api_keys WHERE revoked IS NULL").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        return [Check("database", "fail", f"{path}: {exc}",
                      "stop the service, move the file aside (tasks and keys in it are lost) and restart")]
    if verdict != "ok":
        return [Check("database", "fail", f"{path}: integrity check says {verdict}",
                      "stop the service and restore the file from a backup, or move it aside")]
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
    out = [Check("database", "ok", f"{path}: {summary}; {keys} active API key(s)")]
    if keys == 0 and not settings.server.api_key_list:
        out.append(Check("api keys", "warn", "no API key: every request will be refused",
                         "run `wanflash keys create` (or `wanflash serve --print-key`)"))
    return out


def check_prompt_extend(settings: Settings) -> list[Check]:
    backend = settings.prompt_extend.backend
    if backend == "none":
        return [Check("promptExtend", "ok", "backend none: prompts pass through (results say promptExtended=false)")]
    if backend == "local":
        d = settings.prompt_extend.model_dir
        if d is None or not (Path(d) / "config.json").is_file():
            return [Check("promptExtend", "warn", f"backend local but WANFLASH_PROMPT_EXTEND_MODEL_DIR={d} holds no "
                          "model: prompts pass through", "point it at a local Qwen2.5(-VL) Instruct checkpoint")]
        return [Check("promptExtend", "ok", f"local model at {d}")]
    if not settings.prompt_extend.url:
        return [Check("promptExtend", "warn", "backend openai but WANFLASH_PROMPT_EXTEND_URL is not set: prompts "
                      "pass through", "set it to an OpenAI-compatible base URL, e.g. http://host:8001/v1")]
    return [Check("promptExtend", "ok", f"openai-compatible at {settings.prompt_extend.url} "
                  f"(model {settings.prompt_extend.model}; not contacted)")]


def run_checks(settings: Settings) -> list[Check]:
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("python", check_python),
        ("engine", lambda: check_engine(settings)),
        ("weights", lambda: check_weights(settings)),
        ("a2v", lambda: check_a2v(settings)),
        ("codecs", check_codecs),
        ("data dir", lambda: check_data_dir(settings)),
        ("database", lambda: check_database(settings)),
        ("promptExtend", lambda: check_prompt_extend(settings)),
    ]
    out: list[Check] = []
    for name, step in steps:
        try:
            out += step()
        except Exception as exc:  # a check that crashes is itself a finding, not a traceback
            out.append(Check(name, "fail", f"the check crashed: {type(exc).__name__}: {exc}"))
    return out


def report(checks: list[Check], settings: Settings, stream: TextIO) -> int:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    engine = settings.engine
    print(f"wanflash doctor: profile {engine.profile}, device {engine.device}, data dir {settings.data_dir}",
          file=stream)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {marks[c.status]}  {c.name:<{width}}  {c.detail}", file=stream)
        if c.fix and c.status != "ok":
            print(f"        {'':<{width}}  fix: {c.fix}", file=stream)
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    print(f"{fails} problem(s), {warns} warning(s)" + ("" if fails else ": ready"), file=stream)
    return 1 if fails else 0


def doctor_cli(settings: Settings, args: argparse.Namespace) -> int:
    return report(run_checks(settings), settings, sys.stdout)

"""The one settings object, composed of one section per component.

Every ``WANFLASH_*`` environment variable (or a ``.env``-style file passed to :func:`load_settings`) is
read here, once, into a frozen :class:`Settings`. No other module reads ``os.environ``.

The variables keep their flat names (``WANFLASH_PROFILE``, ``WANFLASH_AUDIO_MODEL``, ``WANFLASH_S3_BUCKET``);
each section reads its own with its own prefix (``AudioConfig`` reads ``WANFLASH_AUDIO_*`` into ``model``,
``steps``, ...). Components receive their section (``create_store(settings.storage, ...)``,
``create_checker(settings.safety)``), not the whole object; only the composition points (``compose``,
the executors and the renderer that build the rest, ``doctor``) see all of it, as vLLM's engine passes
its composed config down and each part picks its own.

``Settings(profile="tiny", data_dir=...)`` and :meth:`Settings.replace` take the flat names too, routed
to their section, so a test or a CLI flag says what the variable says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProfileName = Literal["tiny", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b"]


class _Section(BaseSettings):
    """One component's variables. Subclasses set ``env_prefix``; a field's variable is prefix + name."""

    model_config = SettingsConfigDict(env_prefix="WANFLASH_", frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """``{flat name: field name}``: the variable's name without ``WANFLASH_``, lower case."""
        prefix = str(cls.model_config.get("env_prefix", "")).lower().removeprefix("wanflash_")
        names = {}
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            flat = alias.lower().removeprefix("wanflash_") if isinstance(alias, str) else prefix + name
            names[flat] = name
        return names


class CoreConfig(_Section):
    """Where this instance keeps its state (the SQLite file, local media, keys, secrets, scratch)."""

    data_dir: Path = Path(".wanflash")


class ServerConfig(_Section):
    """The API process: where it listens, the links it writes, the keys it accepts, its web page."""

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="Base URL clients use to reach this server; default http://host:port"
    )
    # Without public_url: Host header names trusted for returned links, comma-separated (loopback names
    # and a non-wildcard `host` always are); any other Host gets links to http://host:port.
    allowed_hosts: str = ""
    # Comma-separated raw keys accepted in addition to those created with `wanflash keys`.
    api_keys: str = ""
    playground: bool = False  # the web page at "/" (`make run` turns it on)

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


# The deprecated WANFLASH_CPU_OFFLOAD values -> the WANFLASH_MEMORY plans they mean.
_CPU_OFFLOAD_PLANS = {"model": "model_offload", "group": "group_offload"}


class EngineConfig(_Section):
    """The Wan model: which profile, where its weights are, and how it is placed and run."""

    profile: ProfileName = "tiny"
    weights_dir: Path | None = Field(default=None, description="diffusers-format weights for the profile")
    lora_dir: Path | None = Field(default=None, description="distilled LoRAs (A14B: high/low noise)")
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attention_backend: str | None = None  # diffusers backend name, e.g. "flash", "sage", "_native_cudnn"
    compile: bool = False  # torch.compile of the repeated transformer blocks
    # Memory plan of the Wan model (wanflash.pipelines.memory): "auto" picks from the GPU's memory
    # and the profile; or full | text_encoder_cpu | model_offload | group_offload.
    memory: Literal["auto", "full", "text_encoder_cpu", "model_offload", "group_offload"] = "auto"
    fp8_weights: bool = False  # transformer weights stored in float8_e4m3fn (diffusers layerwise casting)
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    native_1080p: Literal["auto", "on", "off"] = "auto"  # generate 1080p at 1080p instead of upscaling 720p
    cpu_offload: Literal["none", "model", "group"] = "none"  # deprecated: WANFLASH_MEMORY=model_offload|group_offload
    executor: Literal["subprocess", "inprocess"] = "subprocess"
    batch_results: bool = True  # run numberResults as one batch where memory allows

    @model_validator(mode="after")
    def _memory_consistent(self) -> EngineConfig:
        mapped = _CPU_OFFLOAD_PLANS.get(self.cpu_offload)
        if mapped and self.memory not in ("auto", mapped):
            raise ValueError(f"WANFLASH_CPU_OFFLOAD={self.cpu_offload} (deprecated) contradicts "
                             f"WANFLASH_MEMORY={self.memory}: unset WANFLASH_CPU_OFFLOAD")
        return self

    @property
    def memory_setting(self) -> str:
        """The memory plan asked for: ``WANFLASH_MEMORY``, or the deprecated ``WANFLASH_CPU_OFFLOAD`` mapped to it."""
        if self.memory == "auto" and self.cpu_offload != "none":
            return _CPU_OFFLOAD_PLANS[self.cpu_offload]
        return self.memory


class AudioConfig(_Section):
    """Native audio (``providerSettings.alibaba.audio``): see wanflash.pipelines.audio and README "Audio".

    One backend, chosen here; tiny profile: its random twin built offline; real profiles: its
    diffusers-format weights in ``weights_dir`` (never fetched). "ace-step" (default): ACE-Step 1.5
    turbo, MIT: music from the prompt, does not see the picture. "ltx2": LTX-2 video-to-audio, follows
    the picture; LTX-2 Community License (revenue cap, no competing service): read it before enabling.
    "none": no audio model; requests that would need generated sound are refused at the API (an input
    track still works).
    """

    model_config = SettingsConfigDict(env_prefix="WANFLASH_AUDIO_")

    model: Literal["ace-step", "ltx2", "none"] = "ace-step"
    weights_dir: Path | None = Field(default=None, description="diffusers-format weights of the audio model")
    steps: int | None = Field(default=None, ge=1,
                              description="denoising steps; default: the backend's (ace-step 8, ltx2 dev 30)")
    # ltx2 only: "distilled" (8 fixed sigmas, no guidance; needs distilled weights) or "dev" (30 guided steps).
    ltx2_variant: Literal["distilled", "dev"] = "distilled"
    # On CUDA, the audio model only (the Wan model follows WANFLASH_MEMORY): "auto" = the backend's plan
    # (ace-step: resident on GPUs of 40 GiB or more, else "model"; ltx2: "model" on 60 GiB or more, else
    # "group", which fits a 24 GB GPU).
    cpu_offload: Literal["auto", "none", "model", "group"] = "auto"


class A2VConfig(_Section):
    """Audio-to-video (``inputs.audio``): see wanflash.pipelines.s2v.

    "auto": Wan2.2-S2V renders requests that bring an image and a track when it is available (tiny: a
    toy S2V built offline; real profiles: when ``weights_dir`` is set), otherwise the track is only
    muxed. "s2v": required (fails to start without weights). "none": always muxing only.
    """

    model_config = SettingsConfigDict(env_prefix="WANFLASH_A2V_")

    model: Literal["auto", "s2v", "none"] = "auto"
    weights_dir: Path | None = Field(default=None, description="Wan2.2-S2V-14B, see wanflash.pipelines.s2v")
    steps: int | None = Field(default=None, ge=1, description="denoising steps; default 40 (tiny: 2)")


class JobsConfig(_Section):
    """The job store and queue: where it is, leases, retries, deadlines and how long things are kept."""

    # PostgreSQL URL for distributed mode (`wanflash api|worker|migrate`); unset = the embedded SQLite file.
    database_url: str | None = None
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 2
    job_deadline_seconds: float = 900.0  # one job's generation, from a loaded model (a load is not counted)
    default_ttl_seconds: int = 86400
    # A finished task's inputs and outputs are deleted this long after its links expire (finished +
    # ttl); -1 keeps them forever. media_sweep_seconds: how often the API process looks.
    media_grace_seconds: int = Field(default=3600, ge=-1)
    # imageUpload/mediaStorage objects are deleted this long after their last use by a task (or their
    # upload, if never used), as Runware does after 30 days; -1 keeps them.
    upload_retention_seconds: int = Field(default=30 * 86400, ge=-1)
    media_sweep_seconds: float = Field(default=300.0, gt=0)


class LimitsConfig(_Section):
    """What the API accepts: body and input sizes, decoding, fetching, and per-key rates."""

    allow_loopback_fetch: bool = False
    max_body_bytes: int = 64 * 1024 * 1024
    max_input_bytes: int = 32 * 1024 * 1024
    # Decoding is the API process's biggest memory cost (a 40 MP image is 120 MB as RGB): the pixel
    # cap (4096 x 4096), decodes at once per process, and the longer side images are stored at
    # (Runware's 2048; the model never needs more) bound it.
    max_image_pixels: int = 16_777_216
    max_concurrent_decodes: int = Field(default=2, ge=1)
    max_stored_image_side: int = Field(default=2048, ge=64)
    max_audio_seconds: float = 60.0
    fetch_timeout_seconds: float = 20.0
    body_deadline_seconds: float = 30.0  # a request body must arrive within this (slow-drip bodies get 408)
    rate_limit_per_s: float = 20.0  # per API key: token refill rate for tasks (ping excluded)
    rate_limit_burst: int = 40  # per API key: tasks allowed at once before the rate applies
    max_in_flight_per_key: int = 16  # per API key: videoInference tasks queued + running (counted in the store)


class StorageConfig(_Section):
    """Where inputs and outputs live (``WANFLASH_STORAGE``, ``WANFLASH_S3_*``).

    "local": files under data_dir/media, served by /media with HMAC-signed links. "s3": an
    S3-compatible bucket; videoURL/imageURL are SigV4 presigned GET URLs (at most 7 days, the SigV4
    limit). Credentials left unset fall back to boto3's own chain (AWS_* variables, ~/.aws, instance roles).
    """

    model_config = SettingsConfigDict(env_prefix="WANFLASH_S3_")

    backend: Literal["local", "s3"] = Field(default="local", validation_alias="WANFLASH_STORAGE")
    bucket: str | None = None
    prefix: str = ""  # prepended to every key, e.g. "wanflash/" (a trailing "/" is added)
    endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000; unset = AWS")
    public_endpoint_url: str | None = Field(
        default=None, description="endpoint written into presigned URLs when clients reach S3 by another name"
    )
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = False  # path-style addressing (MinIO, most self-hosted servers)

    @model_validator(mode="after")
    def _complete(self) -> StorageConfig:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("WANFLASH_STORAGE=s3 needs WANFLASH_S3_BUCKET")
        return self


class SecretsConfig(_Section):
    """Keys for signed media links and webhook signatures; unset ones are generated and kept in data_dir."""

    url_secret: str | None = Field(default=None, description="HMAC key for signed media URLs")
    webhook_secret: str | None = None


class PromptExtendConfig(_Section):
    """promptExtend and shotType multi: see wanflash.pipelines.prompt_extend.

    "none" passes prompts through unchanged (the response says so); the task never fails for it.
    """

    model_config = SettingsConfigDict(env_prefix="WANFLASH_PROMPT_EXTEND_")

    backend: Literal["none", "local", "openai"] = "none"
    model_dir: Path | None = Field(
        default=None, description="local Qwen2.5(-VL) Instruct checkpoint for the 'local' backend"
    )
    url: str | None = Field(
        default=None, description="base URL of an OpenAI-compatible server, e.g. http://host:8001/v1"
    )
    model: str = "qwen2.5-7b-instruct"  # model name sent to the OpenAI-compatible server
    api_key: str | None = None
    timeout_s: float = 30.0
    device: str = "auto"  # 'local' backend: auto | cpu | cuda | cuda:N


class SafetyConfig(_Section):
    """safety.checkContent / safety.mode: see wanflash.pipelines.safety and README "Content safety".

    detector "none": requests that ask for checking are refused.
    """

    model_config = SettingsConfigDict(env_prefix="WANFLASH_SAFETY_")

    detector: Literal["none", "classifier", "clip", "nudenet"] = "none"
    model_dir: Path | None = Field(
        default=None, description="local model directory for the 'classifier' and 'clip' detectors"
    )
    labels: str = "nsfw,porn,hentai,sexy"  # 'classifier': labels that count as NSFW, comma-separated
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)  # 'classifier' / 'nudenet' score to flag
    withhold: bool = True  # a flagged task fails with nsfwContentDetected; false: deliver, NSFWContent true
    device: str = "auto"  # auto | cpu | cuda | cuda:N


class ObservabilityConfig(_Section):
    """Logs and Prometheus metrics, of the API and of the workers."""

    log_json: bool = False  # one JSON object per log line, with taskUUID on lines about a task
    metrics: bool = True  # Prometheus text at /metrics
    metrics_token: str | None = Field(
        default=None, description="when set, /metrics requires Authorization: Bearer <token>"
    )
    # `wanflash worker`: slot (or group) i serves its Prometheus metrics on this port + i, on the
    # server's host (stages, GPU memory, executor state); unset = none.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)


class Settings(BaseModel):
    """Service configuration: ``data_dir`` and one section per component."""

    model_config = ConfigDict(frozen=True)

    SECTIONS: ClassVar[dict[str, type[_Section]]] = {
        "server": ServerConfig, "engine": EngineConfig, "audio": AudioConfig, "a2v": A2VConfig,
        "jobs": JobsConfig, "limits": LimitsConfig, "storage": StorageConfig, "secrets": SecretsConfig,
        "prompt_extend": PromptExtendConfig, "safety": SafetyConfig, "observability": ObservabilityConfig,
    }

    data_dir: Path
    server: ServerConfig
    engine: EngineConfig
    audio: AudioConfig
    a2v: A2VConfig
    jobs: JobsConfig
    limits: LimitsConfig
    storage: StorageConfig
    secrets: SecretsConfig
    prompt_extend: PromptExtendConfig
    safety: SafetyConfig
    observability: ObservabilityConfig

    @model_validator(mode="before")
    @classmethod
    def _compose(cls, data: Any) -> Any:
        """Route flat names (``profile=``, ``s3_bucket=``) to their sections; read the environment for the rest."""
        if not isinstance(data, dict):
            return data
        flat = dict(data)
        env_file = flat.pop("_env_file", None)
        out: dict[str, Any] = {}
        if "data_dir" in flat:
            out["data_dir"] = flat.pop("data_dir")
        for section in cls.SECTIONS:
            # "storage" is a section and a variable (WANFLASH_STORAGE=s3): a plain value is the variable.
            if isinstance(flat.get(section), (dict, BaseModel)):
                out[section] = flat.pop(section)
        routed = _route(flat)
        extra = {"_env_file": env_file} if env_file is not None else {}
        if "data_dir" not in out:
            out["data_dir"] = CoreConfig(**extra).data_dir
        for section, section_cls in cls.SECTIONS.items():
            given, changes = out.get(section), routed.get(section, {})
            if given is None:
                out[section] = section_cls(**extra, **changes)
            elif changes:
                out[section] = _replaced(section_cls, given, changes)
        return out

    def replace(self, **changes: Any) -> Settings:
        """A copy with some variables changed, by their flat names (``device="cpu"``), validated."""
        top: dict[str, Any] = {"data_dir": Path(changes.pop("data_dir"))} if "data_dir" in changes else {}
        for section, fields in _route(changes).items():
            top[section] = _replaced(self.SECTIONS[section], getattr(self, section), fields)
        return self.model_copy(update=top)


def _route(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"audio_model": v}`` -> ``{"audio": {"model": v}}``; an unknown name is refused."""
    routed: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        where = _FLAT.get(name)
        if where is None:
            raise ValueError(f"unknown setting {name!r} (WANFLASH_{name.upper()} is not a variable)")
        routed.setdefault(where[0], {})[where[1]] = value
    return routed


def _replaced(section_cls: type[_Section], given: Any, changes: dict[str, Any]) -> _Section:
    base = given.model_dump() if isinstance(given, BaseModel) else dict(given)
    return section_cls.model_validate({**base, **changes})


# flat name -> (section, field), e.g. "audio_model" -> ("audio", "model")
_FLAT: dict[str, tuple[str, str]] = {
    flat: (section, field)
    for section, section_cls in Settings.SECTIONS.items()
    for flat, field in section_cls.flat_names().items()
}


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this process's, with ``overrides`` (e.g. ``CUDA_VISIBLE_DEVICES``).

    Here because this is the one module that touches the environment."""
    return {**os.environ, **overrides}


def load_settings(env_file: str | Path | None = None, **overrides: object) -> Settings:
    """Read the environment (and optionally a dotenv file) once; ``overrides`` (CLI flags, by flat name) win."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if env_file is not None:
        clean["_env_file"] = str(env_file)
    return Settings.model_validate(clean)

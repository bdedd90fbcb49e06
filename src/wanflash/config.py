"""The one settings object.

Every ``WANFLASH_*`` environment variable (or a ``.env``-style file named by ``WANFLASH_ENV_FILE``
passed to :func:`load_settings`) is read here, once, into a frozen :class:`Settings`. No other
module reads ``os.environ``; objects receive the settings they need explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProfileName = Literal["tiny", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b"]


class Settings(BaseSettings):
    """Service configuration. Field names map to ``WANFLASH_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="WANFLASH_", frozen=True, extra="ignore")

    # -- where things live
    data_dir: Path = Path(".wanflash")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="Base URL clients use to reach this server; default http://host:port"
    )
    # Without public_url: Host header names trusted for returned links, comma-separated (loopback names
    # and a non-wildcard `host` always are); any other Host gets links to http://host:port.
    allowed_hosts: str = ""

    # -- auth: comma-separated raw keys accepted in addition to those created with `wanflash keys`
    api_keys: str = ""

    # -- engine
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

    # -- native audio (providerSettings.alibaba.audio): see wanflash.pipelines.audio and README "Audio".
    # One backend, chosen here; tiny profile: its random twin built offline; real profiles: its
    # diffusers-format weights in audio_weights_dir (never fetched).
    # "ace-step" (default): ACE-Step 1.5 turbo, MIT: music from the prompt, does not see the picture.
    # "ltx2": LTX-2 video-to-audio, follows the picture; LTX-2 Community License (revenue cap, no
    # competing service): read it before enabling. "none": no audio model; requests that would need
    # generated sound are refused at the API (an input track still works).
    audio_model: Literal["ace-step", "ltx2", "none"] = "ace-step"
    audio_weights_dir: Path | None = Field(default=None, description="diffusers-format weights of audio_model")
    audio_steps: int | None = Field(default=None, ge=1,
                                    description="denoising steps; default: the backend's (ace-step 8, ltx2 dev 30)")
    # ltx2 only: "distilled" (8 fixed sigmas, no guidance; needs distilled weights) or "dev" (30 guided steps).
    audio_ltx2_variant: Literal["distilled", "dev"] = "distilled"
    # On CUDA, the audio model only (the Wan model follows WANFLASH_MEMORY): "auto" = the backend's plan
    # (ace-step: resident on GPUs of 40 GiB or more, else "model"; ltx2: "model" on 60 GiB or more, else
    # "group", which fits a 24 GB GPU).
    audio_cpu_offload: Literal["auto", "none", "model", "group"] = "auto"

    # -- audio-to-video (inputs.audio): see wanflash.pipelines.s2v. "auto": Wan2.2-S2V renders requests
    # that bring an image and a track when it is available (tiny: a toy S2V built offline; real profiles:
    # when a2v_weights_dir is set), otherwise the track is only muxed. "s2v": required (fails to start
    # without weights). "none": always muxing only.
    a2v_model: Literal["auto", "s2v", "none"] = "auto"
    a2v_weights_dir: Path | None = Field(default=None, description="Wan2.2-S2V-14B, see wanflash.pipelines.s2v")
    a2v_steps: int | None = Field(default=None, ge=1, description="denoising steps; default 40 (tiny: 2)")

    # -- jobs
    # PostgreSQL URL for distributed mode (`wanflash api|worker|migrate`); unset = the embedded SQLite file.
    database_url: str | None = None
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 2
    job_deadline_seconds: float = 900.0
    default_ttl_seconds: int = 86400
    # A finished task's inputs and outputs are deleted this long after its links expire (finished +
    # ttl); -1 keeps them forever. media_sweep_seconds: how often the API process looks.
    media_grace_seconds: int = Field(default=3600, ge=-1)
    # imageUpload/mediaStorage objects are deleted this long after their last use by a task (or their
    # upload, if never used), as Runware does after 30 days; -1 keeps them.
    upload_retention_seconds: int = Field(default=30 * 86400, ge=-1)
    media_sweep_seconds: float = Field(default=300.0, gt=0)

    # -- inputs and limits
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

    # -- storage: where inputs and outputs live. "local": files under data_dir/media, served by
    # /media with HMAC-signed links. "s3": an S3-compatible bucket; videoURL/imageURL are SigV4
    # presigned GET URLs (at most 7 days, the SigV4 limit). Credentials left unset fall back to
    # boto3's own chain (AWS_* variables, ~/.aws, instance roles).
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""  # prepended to every key, e.g. "wanflash/" (a trailing "/" is added)
    s3_endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000; unset = AWS")
    s3_public_endpoint_url: str | None = Field(
        default=None, description="endpoint written into presigned URLs when clients reach S3 by another name"
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_path_style: bool = False  # path-style addressing (MinIO, most self-hosted servers)

    # -- delivery
    url_secret: str | None = Field(default=None, description="HMAC key for signed media URLs")
    webhook_secret: str | None = None

    # -- prompt extension (promptExtend, shotType multi): see wanflash.pipelines.prompt_extend.
    # "none" passes prompts through unchanged (the response says so); the task never fails for it.
    prompt_extend_backend: Literal["none", "local", "openai"] = "none"
    prompt_extend_model_dir: Path | None = Field(
        default=None, description="local Qwen2.5(-VL) Instruct checkpoint for the 'local' backend"
    )
    prompt_extend_url: str | None = Field(
        default=None, description="base URL of an OpenAI-compatible server, e.g. http://host:8001/v1"
    )
    prompt_extend_model: str = "qwen2.5-7b-instruct"  # model name sent to the OpenAI-compatible server
    prompt_extend_api_key: str | None = None
    prompt_extend_timeout_s: float = 30.0
    prompt_extend_device: str = "auto"  # 'local' backend: auto | cpu | cuda | cuda:N

    # -- content safety (safety.checkContent / safety.mode): see wanflash.pipelines.safety and the
    # README's "Content safety" section. "none": requests that ask for checking are refused.
    safety_detector: Literal["none", "classifier", "clip", "nudenet"] = "none"
    safety_model_dir: Path | None = Field(
        default=None, description="local model directory for the 'classifier' and 'clip' detectors"
    )
    safety_labels: str = "nsfw,porn,hentai,sexy"  # 'classifier': labels that count as NSFW, comma-separated
    safety_threshold: float = Field(default=0.5, gt=0.0, le=1.0)  # 'classifier' / 'nudenet' score to flag
    safety_withhold: bool = True  # a flagged task fails with nsfwContentDetected; false: deliver, NSFWContent true
    safety_device: str = "auto"  # auto | cpu | cuda | cuda:N

    # -- playground / ops
    playground: bool = False  # the web page at "/" (`make run` turns it on)
    log_json: bool = False  # one JSON object per log line, with taskUUID on lines about a task
    metrics: bool = True  # Prometheus text at /metrics
    # `wanflash worker`: slot (or group) i serves its Prometheus metrics on this port + i, on `host`
    # (stages, GPU memory, executor state); unset = none.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_token: str | None = Field(
        default=None, description="when set, /metrics requires Authorization: Bearer <token>"
    )

    @model_validator(mode="after")
    def _storage_complete(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("WANFLASH_STORAGE=s3 needs WANFLASH_S3_BUCKET")
        return self

    @model_validator(mode="after")
    def _memory_consistent(self) -> Settings:
        mapped = {"model": "model_offload", "group": "group_offload"}.get(self.cpu_offload)
        if mapped and self.memory not in ("auto", mapped):
            raise ValueError(f"WANFLASH_CPU_OFFLOAD={self.cpu_offload} (deprecated) contradicts "
                             f"WANFLASH_MEMORY={self.memory}: unset WANFLASH_CPU_OFFLOAD")
        return self

    @property
    def memory_setting(self) -> str:
        """The memory plan asked for: ``WANFLASH_MEMORY``, or the deprecated ``WANFLASH_CPU_OFFLOAD`` mapped to it."""
        if self.memory == "auto" and self.cpu_offload != "none":
            return {"model": "model_offload", "group": "group_offload"}[self.cpu_offload]
        return self.memory

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this process's, with ``overrides`` (e.g. ``CUDA_VISIBLE_DEVICES``).

    Here because this is the one module that touches the environment."""
    return {**os.environ, **overrides}


def load_settings(env_file: str | Path | None = None, **overrides: object) -> Settings:
    """Read the environment (and optionally a dotenv file) once; ``overrides`` win (CLI flags)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if env_file is not None:
        return Settings(_env_file=str(env_file), **clean)  # type: ignore[call-arg,arg-type]
    return Settings(**clean)  # type: ignore[arg-type]

"""Settings -> the ``VideoPipeline`` to run (not yet loaded).

``tiny`` builds (once) and loads the embedded random model under ``data_dir/models``; the real
profiles load diffusers-format weights from ``WANFLASH_WEIGHTS_DIR`` and never download. Unless
``audio_model`` is ``none`` the video pipeline is wrapped with the native-audio stage
(:mod:`wanflash.pipelines.audio`) running the backend ``audio_model`` names: its tiny twin for
``tiny``, its weights in ``WANFLASH_AUDIO_WEIGHTS_DIR`` otherwise.
Outermost, when audio-to-video is on (:func:`a2v_mode`), requests with an image and ``inputs.audio``
go to the Wan2.2-S2V stage (:mod:`wanflash.pipelines.s2v`): the toy S2V for ``tiny``,
``WANFLASH_A2V_WEIGHTS_DIR`` otherwise; without those weights input tracks are only muxed.
Importing this module does not import torch; :func:`create_pipeline` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from wanflash.pipelines.profiles import get_profile

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.pipelines.audio import AudioBackend
    from wanflash.pipelines.base import VideoPipeline


class WeightsNotFound(FileNotFoundError):
    """A real profile was chosen but its weights are not on disk."""


def weights_root(settings: Settings, *, progress: bool | None = None) -> Path:
    """Where the profile's weights are, checked; builds the tiny model on first use (``progress``:
    a progress bar while building; ``None``: only on a terminal)."""
    if get_profile(settings.engine.profile).loader == "tiny":
        from wanflash.pipelines.tiny import ensure_tiny_model

        return ensure_tiny_model(settings.data_dir, progress=progress)
    root = settings.engine.weights_dir
    if root is None:
        raise WeightsNotFound(
            f"profile {settings.engine.profile!r} needs local diffusers-format weights: set WANFLASH_WEIGHTS_DIR "
            f"to the downloaded directory (e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers), or use WANFLASH_PROFILE=tiny"
        )
    if not (Path(root) / "model_index.json").is_file():
        raise WeightsNotFound(
            f"WANFLASH_WEIGHTS_DIR={root} holds no diffusers pipeline (model_index.json missing) "
            f"for profile {settings.engine.profile!r}"
        )
    return Path(root)


def route_library_logs() -> None:
    """Send diffusers' and transformers' log records through the root handler (JSON lines with
    ``log_json``) instead of their own stderr handlers, and silence their download/save bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.disable_default_handler()
        lib.enable_propagation()
        lib.disable_progress_bar()


def create_pipeline(settings: Settings, *, progress: bool | None = None) -> VideoPipeline:
    """The pipeline for ``settings.engine.profile``; call ``.load()`` once before ``.generate``."""
    profile = get_profile(settings.engine.profile)
    if settings.observability.log_json:
        route_library_logs()  # before the imports below, which log
        if progress is None:
            progress = False  # a bar on stderr would break the one-JSON-object-per-line log stream
    root = weights_root(settings, progress=progress)
    lora_dir = None
    if profile.uses_loras and settings.engine.lora_dir is not None:
        if not Path(settings.engine.lora_dir).is_dir():
            raise WeightsNotFound(f"WANFLASH_LORA_DIR={settings.engine.lora_dir} is not a directory")
        lora_dir = Path(settings.engine.lora_dir)
    from wanflash.pipelines.wan import WanVideoPipeline

    video: VideoPipeline = WanVideoPipeline(settings.engine, profile, root, lora_dir=lora_dir)
    if settings.audio.model != "none":
        from wanflash.pipelines.audio import AudioVideoPipeline

        video = AudioVideoPipeline(video, create_audio_backend(settings, progress=progress))
    a2v_root = a2v_weights_root(settings, progress=progress)
    if a2v_root is None:
        return video
    from wanflash.pipelines.s2v import RECIPES as S2V_RECIPES
    from wanflash.pipelines.s2v import AudioDrivenPipeline, S2VStage

    s2v_recipe = S2V_RECIPES["tiny" if settings.engine.profile == "tiny" else "s2v"]
    return AudioDrivenPipeline(video, S2VStage(settings.a2v, a2v_root, s2v_recipe, device=settings.engine.device,
                                                dtype=settings.engine.dtype))


def create_audio_backend(settings: Settings, *, progress: bool | None = None) -> AudioBackend:
    """The ``AudioBackend`` that ``settings.audio.model`` names (not ``none``), not yet loaded."""
    root = audio_weights_root(settings, progress=progress)
    tiny = get_profile(settings.engine.profile).audio_loader == "tiny"
    audio, place = settings.audio, {"device": settings.engine.device, "dtype": settings.engine.dtype}
    if audio.model == "ace-step":
        from wanflash.pipelines.audio_acestep import AceStepAudioBackend

        return AceStepAudioBackend(audio, root, **place, name="tiny-ace-step" if tiny else "ace-step-1.5",
                                   default_steps=2 if tiny else 8)
    if audio.model == "ltx2":
        from wanflash.pipelines.audio_ltx2 import RECIPES, LTX2AudioBackend

        return LTX2AudioBackend(audio, root, RECIPES["tiny" if tiny else audio.ltx2_variant], **place)
    raise ValueError(f"no audio backend {settings.audio.model!r}")


def a2v_mode(settings: Settings) -> str:
    """What a request with ``inputs.audio`` gets on this configuration: ``"s2v"`` (Wan2.2-S2V renders
    the picture from the image and the track) or ``"mux"`` (the track is only the soundtrack)."""
    if settings.a2v.model == "none":
        return "mux"
    if settings.a2v.model == "s2v" or settings.engine.profile == "tiny" or settings.a2v.weights_dir is not None:
        return "s2v"
    return "mux"


def a2v_weights_root(settings: Settings, *, progress: bool | None = None) -> Path | None:
    """The S2V weights for audio-to-video, checked (the toy S2V is built on first use for ``tiny``),
    or None when this configuration only muxes input tracks (:func:`a2v_mode`)."""
    if a2v_mode(settings) == "mux":
        return None
    if settings.a2v.weights_dir is None and settings.engine.profile == "tiny":
        from wanflash.pipelines.tiny_s2v import ensure_tiny_s2v_model

        return ensure_tiny_s2v_model(settings.data_dir, progress=progress)
    root = settings.a2v.weights_dir
    missing = [] if root is None else [s for s in S2V_PARTS if not (Path(root) / s).is_dir()]
    if root is None or missing:
        where = "is not set" if root is None else f"={root} lacks {', '.join(missing)}"
        raise WeightsNotFound(
            f"audio-to-video needs local Wan2.2-S2V weights: WANFLASH_A2V_WEIGHTS_DIR {where}; see the README's "
            f"Audio section for the layout, or set WANFLASH_A2V_MODEL=none (input tracks are then only muxed)"
        )
    return Path(root)


S2V_PARTS = ("transformer", "audio_encoder", "vae", "text_encoder", "tokenizer")


def audio_weights_root(settings: Settings, *, progress: bool | None = None) -> Path:
    """Where the selected audio backend's weights are, checked; builds its tiny twin on first use."""
    from wanflash.pipelines.audio import BACKENDS

    if get_profile(settings.engine.profile).audio_loader == "tiny":
        from wanflash.pipelines.tiny_audio import ensure_tiny_audio_model

        return ensure_tiny_audio_model(settings.data_dir, settings.audio.model, progress=progress)
    root = settings.audio.weights_dir
    if root is None or not (Path(root) / "model_index.json").is_file():
        where = "is not set" if root is None else f"={root} holds no diffusers pipeline (model_index.json missing)"
        raise WeightsNotFound(
            f"native audio (WANFLASH_AUDIO_MODEL={settings.audio.model}) needs local weights: "
            f"WANFLASH_AUDIO_WEIGHTS_DIR {where}; download the {BACKENDS[settings.audio.model].weights} there, "
            f"or set WANFLASH_AUDIO_MODEL=none to serve without generated audio (requests then need "
            f"providerSettings.alibaba.audio=false or inputs.audio)"
        )
    return Path(root)

"""Settings -> the ``VideoPipeline`` to run (not yet loaded).

``tiny`` builds (once) and loads the embedded random model under ``data_dir/models``; the real
profiles load diffusers-format weights from ``WANFLASH_WEIGHTS_DIR`` and never download. Unless
``audio_model`` is ``none`` the video pipeline is wrapped with the native-audio stage
(:mod:`wanflash.pipelines.audio`): the tiny LTX-2 for ``tiny``, ``WANFLASH_AUDIO_WEIGHTS_DIR`` otherwise.
Importing this module does not import torch; :func:`create_pipeline` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from wanflash.pipelines.profiles import get_profile

if TYPE_CHECKING:
    from wanflash.config import Settings
    from wanflash.pipelines.base import VideoPipeline


class WeightsNotFound(FileNotFoundError):
    """A real profile was chosen but its weights are not on disk."""


def weights_root(settings: Settings, *, progress: bool | None = None) -> Path:
    """Where the profile's weights are, checked; builds the tiny model on first use (``progress``:
    a progress bar while building; ``None``: only on a terminal)."""
    if get_profile(settings.profile).loader == "tiny":
        from wanflash.pipelines.tiny import ensure_tiny_model

        return ensure_tiny_model(settings.data_dir, progress=progress)
    root = settings.weights_dir
    if root is None:
        raise WeightsNotFound(
            f"profile {settings.profile!r} needs local diffusers-format weights: set WANFLASH_WEIGHTS_DIR "
            f"to the downloaded directory (e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers), or use WANFLASH_PROFILE=tiny"
        )
    if not (Path(root) / "model_index.json").is_file():
        raise WeightsNotFound(
            f"WANFLASH_WEIGHTS_DIR={root} holds no diffusers pipeline (model_index.json missing) "
            f"for profile {settings.profile!r}"
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
    """The pipeline for ``settings.profile``; call ``.load()`` once before ``.generate``."""
    profile = get_profile(settings.profile)
    if settings.log_json:
        route_library_logs()  # before the imports below, which log
        if progress is None:
            progress = False  # a bar on stderr would break the one-JSON-object-per-line log stream
    root = weights_root(settings, progress=progress)
    lora_dir = None
    if profile.uses_loras and settings.lora_dir is not None:
        if not Path(settings.lora_dir).is_dir():
            raise WeightsNotFound(f"WANFLASH_LORA_DIR={settings.lora_dir} is not a directory")
        lora_dir = Path(settings.lora_dir)
    from wanflash.pipelines.wan import WanVideoPipeline

    video = WanVideoPipeline(settings, profile, root, lora_dir=lora_dir)
    if settings.audio_model == "none":
        return video
    from wanflash.pipelines.audio import RECIPES, AudioVideoPipeline, LTX2AudioStage

    recipe = RECIPES[profile.audio_recipe]
    return AudioVideoPipeline(video, LTX2AudioStage(settings, audio_weights_root(settings, progress=progress), recipe))


def audio_weights_root(settings: Settings, *, progress: bool | None = None) -> Path:
    """Where the LTX-2 audio weights are, checked; builds the tiny audio model on first use."""
    if get_profile(settings.profile).audio_recipe == "tiny":
        from wanflash.pipelines.tiny_audio import ensure_tiny_audio_model

        return ensure_tiny_audio_model(settings.data_dir, progress=progress)
    root = settings.audio_weights_dir
    if root is None or not (Path(root) / "model_index.json").is_file():
        where = "is not set" if root is None else f"={root} holds no diffusers pipeline (model_index.json missing)"
        raise WeightsNotFound(
            f"native audio needs local LTX-2 weights: WANFLASH_AUDIO_WEIGHTS_DIR {where}; download the "
            f"diffusers-format Lightricks/LTX-2 there, or set WANFLASH_AUDIO_MODEL=none to serve without "
            f"generated audio (requests then need providerSettings.alibaba.audio=false or inputs.audio)"
        )
    return Path(root)

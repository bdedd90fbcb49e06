"""Model pipelines: the only package whose modules import torch or diffusers.

This ``__init__`` and :mod:`wanflash.pipelines.profiles` stay import-light so the API side can
read profile facts (fps, clip length) without loading torch.

Weights load from local directories only: ``HF_HUB_OFFLINE`` is set here, before any module of
the package can import huggingface_hub (which reads it at import), so no ``from_pretrained``
anywhere below reaches a hub unless the caller's environment explicitly sets it otherwise.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

"""Model pipelines: the only package whose modules import torch or diffusers.

This ``__init__`` and :mod:`wanflash.pipelines.profiles` stay import-light so the API side can
read profile facts (fps, clip length) without loading torch.
"""

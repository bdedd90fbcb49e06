"""What the engine finds on this machine (torch, CUDA, diffusers, transformers), as plain data.

For ``wanflash doctor``. Each import is attempted and its failure reported, never raised, so the
doctor can say what is missing. This lives in ``pipelines`` because it imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any


def _module(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising anything else on import
        return None, f"{type(exc).__name__}: {exc}"


def engine_info() -> dict[str, Any]:
    """``{"torch": {"version"|"error"}, "cuda": {...}, "diffusers": {...}, "transformers": {...}}``."""
    out: dict[str, Any] = {}
    torch, err = _module("torch")
    out["torch"] = {"error": err} if torch is None else {"version": torch.__version__}
    if torch is not None:
        cuda: dict[str, Any] = {"built_with": torch.version.cuda, "available": False, "devices": []}
        try:
            cuda["available"] = bool(torch.cuda.is_available())
            for i in range(torch.cuda.device_count() if cuda["available"] else 0):
                props = torch.cuda.get_device_properties(i)
                cuda["devices"].append({"index": i, "name": props.name, "total_bytes": int(props.total_memory),
                                        "capability": f"{props.major}.{props.minor}"})
        except Exception as exc:  # a driver/runtime mismatch raises here
            cuda["error"] = f"{type(exc).__name__}: {exc}"
        out["cuda"] = cuda
    for name in ("diffusers", "transformers"):
        mod, err = _module(name)
        out[name] = {"error": err} if mod is None else {"version": getattr(mod, "__version__", "?")}
    return out

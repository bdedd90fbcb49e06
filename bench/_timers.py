"""Where a request's time goes inside the benchmark server (``bench/_serve.py --timers FILE``).

Scratch-free diagnosis for ``bench/api_load.py --timers``: it wraps the layers a submit and a
poll pass through (router, job service, store) with wall-clock timers, watches the event loop's
lag (how late a 5 ms sleep wakes up: anything that holds the loop or the GIL shows here), and
lists the modules first imported after the first client connected (a lazy import under load
holds the GIL for its whole run). On shutdown the figures go to FILE as JSON.

Layers that a revision lacks (``--server-src``) are skipped, so old revisions can be compared.
The timers add a few microseconds per call; compare runs with the same flag.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

# (module, class, method): the submit and poll path, outermost first.
LAYERS = [
    ("wanflash.api.tasks", "TaskRouter", "_video_inference"),
    ("wanflash.api.tasks", "TaskRouter", "_get_response"),
    ("wanflash.jobs.service", "JobService", "submit"),
    ("wanflash.jobs.service", "JobService", "in_flight"),
    ("wanflash.jobs.service", "JobService", "get"),
    ("wanflash.jobs.store", "SqliteJobSource", "in_flight"),
    ("wanflash.jobs.store", "SqliteJobSource", "get"),
    ("wanflash.jobs.store", "SqliteJobSource", "insert_many"),
    ("wanflash.jobs.store", "SqliteJobSource", "claim"),
    ("wanflash.jobs.store", "SqliteJobSource", "complete"),
]
LAG_TICK_S = 0.005


class Timers:
    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.lag_ms: list[float] = []
        self.modules_at_first_client: set[str] | None = None

    def install(self) -> None:
        import importlib

        for module, cls_name, name in LAYERS:
            cls = getattr(importlib.import_module(module), cls_name, None)
            if cls is not None and hasattr(cls, name):
                setattr(cls, name, self._wrap(f"{cls_name}.{name}", getattr(cls, name)))

    def _wrap(self, label: str, fn: Any) -> Any:
        out = self.calls.setdefault(label, [])
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def timed_async(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    out.append((time.perf_counter() - t) * 1000)
            return timed_async

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                out.append((time.perf_counter() - t) * 1000)
        return timed

    def asgi(self, app: Any) -> Any:
        """Wrap the app: the first ASGI call (lifespan startup) starts the lag watch in the server's loop."""
        watch: list[asyncio.Task[None]] = []

        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if not watch:
                watch.append(asyncio.create_task(self._watch_lag()))
            if scope["type"] != "lifespan" and self.modules_at_first_client is None:
                self.modules_at_first_client = set(sys.modules)
            await app(scope, receive, send)
        return wrapped

    async def _watch_lag(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.lag_ms.append(max(0.0, (time.perf_counter() - t - LAG_TICK_S) * 1000))

    def write(self, path: str | Path) -> None:
        late = sorted(set(sys.modules) - self.modules_at_first_client) if self.modules_at_first_client else []
        Path(path).write_text(json.dumps({
            "calls_ms": {k: v for k, v in self.calls.items() if v},
            "loop_lag_ms": self.lag_ms,
            "late_imports": late,
        }))

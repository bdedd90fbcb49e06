"""What every wanflash process that is not the API server does first: logging, and a parent watch.

:func:`bootstrap_process` is the one start-up of the processes the worker side spawns (executor
child, ``wanflash worker`` parent and slots, group ranks): it installs the one log handler
(:func:`~wanflash.observability.logs.configure_logging`, so ``WANFLASH_LOG_JSON`` holds in every
process, each line labelled with the process) and, given the parent's pid, starts
:func:`watch_parent`.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from wanflash.observability.logs import configure_logging

if TYPE_CHECKING:
    from wanflash.config import Settings

log = logging.getLogger(__name__)


def bootstrap_process(settings: Settings, *, label: str | None = None, parent_pid: int | None = None,
                      on_orphaned: Callable[[], object] | None = None) -> None:
    """Configure logging for this process; with ``parent_pid``, act when that parent is gone."""
    configure_logging(json_lines=settings.observability.log_json, process_label=label)
    if parent_pid is not None:
        watch_parent(parent_pid, on_orphaned)


def watch_parent(parent_pid: int, on_orphaned: Callable[[], object] | None = None, *,
                 interval: float = 1.0) -> threading.Thread:
    """Call ``on_orphaned`` once (default: exit at once, even mid-render or mid-load) when this
    process's parent ``parent_pid`` is gone: a process orphaned by a killed parent must not keep
    claiming jobs or hold its GPU. A process made by ``multiprocessing`` waits on its parent
    sentinel (readable the moment the parent dies); others poll the parent pid every ``interval``
    seconds. ``on_orphaned`` runs on the watch thread."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None and parent.pid == parent_pid else None

    def watch() -> None:
        if sentinel is not None:
            multiprocessing.connection.wait([sentinel])
        else:
            while os.getppid() == parent_pid:
                time.sleep(interval)
        log.warning("parent %d is gone; stopping", parent_pid)
        if on_orphaned is None:
            os._exit(1)
        on_orphaned()

    thread = threading.Thread(target=watch, name="wanflash-parent-watch", daemon=True)
    thread.start()
    return thread

"""One asyncio task per background loop of the API process (webhook outbox, media sweeper)."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    """``start`` runs :meth:`_loop` as a task on the running loop; ``stop`` cancels it and waits."""

    task_name = "wanflash-background"
    _task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

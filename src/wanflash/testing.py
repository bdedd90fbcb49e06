"""Test support: a real uvicorn server on a free loopback port, running in a thread.

Used by the service and SDK tests (and usable by anyone testing against the real wire
protocol). The server is exactly what ``wanflash serve`` runs, minus signal handling:
``wanflash.compose.build_app`` with the same uvicorn options, bound to ``127.0.0.1:<free port>``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from wanflash.config import Settings


@dataclass
class LiveServer:
    settings: Settings
    port: int
    app: object

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def services(self):
        return self.app.state.services  # type: ignore[attr-defined]


@contextmanager
def live_server(settings: Settings, *, pipeline_factory: object = None, executor: object = None,
                startup_timeout: float = 30.0) -> Iterator[LiveServer]:
    import uvicorn

    from wanflash.api.server import uvicorn_config_kwargs
    from wanflash.compose import build_app

    app = build_app(settings, pipeline_factory=pipeline_factory, executor=executor)  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            **uvicorn_config_kwargs(settings))  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="wanflash-test-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(settings, port, app)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()

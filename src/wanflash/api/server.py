"""``wanflash serve``: one process with the API, the SQLite job store, the supervisor and
the executor child, under uvicorn. ``wanflash api``: the same API without supervisor and
executor, over PostgreSQL (stateless; run as many replicas as you like).

The WebSocket message limit is ``max_body_bytes`` because SDKs inline images and audio as
base64 (protocol §4.1). With ``print_key`` a fresh install gets one API key, created here,
stored hashed, and printed once to stdout. Logs (uvicorn's included) go to stderr through one
handler: text, or one JSON object per line with ``WANFLASH_LOG_JSON``.
"""

from __future__ import annotations

import sys

from wanflash.config import Settings
from wanflash.observability.logs import configure_logging


def uvicorn_config_kwargs(settings: Settings) -> dict[str, object]:
    """What both ``serve`` and the test server pass to uvicorn."""
    return {
        "ws_max_size": settings.limits.max_body_bytes,
        "ws_per_message_deflate": False,
        "ws_ping_interval": None,  # the SDKs run their own ping/pong in JSON frames
        "timeout_keep_alive": 5,
        "lifespan": "on",
    }


def serve(settings: Settings, print_key: bool = False, *, worker: bool = True) -> int:
    import uvicorn

    from wanflash.api.auth import ensure_first_key
    from wanflash.compose import build_app
    from wanflash.jobs.source import db_path, open_job_source, refuse_terminal_writes

    configure_logging(json_lines=settings.observability.log_json)
    if not worker and not settings.jobs.database_url:
        print("wanflash api needs WANFLASH_DATABASE_URL (PostgreSQL, shared with the workers); "
              "`wanflash serve` runs the embedded all-in-one mode.", file=sys.stderr)
        return 2
    if print_key:
        store = open_job_source(settings.jobs, outbox=refuse_terminal_writes, sqlite_path=db_path(settings.data_dir))
        try:
            raw = ensure_first_key(settings.server, store)
        finally:
            store.close()
        if raw is not None:
            bar = "=" * 72
            print(f"{bar}\nNew API key (stored hashed; shown only this once, save it now):\n\n    {raw}\n\n"
                  f"Use it as the SDK's api_key with url ws://{settings.server.host}:{settings.server.port}/v1\n{bar}",
                  flush=True)
    app = build_app(settings, worker=worker)
    # log_config=None: uvicorn's own loggers go through the root handler configured above (JSON lines
    # with WANFLASH_LOG_JSON), instead of uvicorn's separate text handlers.
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level="info",
                            log_config=None, **uvicorn_config_kwargs(settings))  # type: ignore[arg-type]
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    from wanflash.config import load_settings

    sys.exit(serve(load_settings(), print_key=True))

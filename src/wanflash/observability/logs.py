"""Log setup: plain text, or one JSON object per line, and the ``taskUUID`` of the task in hand.

:func:`task_context` puts a task's id in a context variable for the code that works on that
task (the router handling a request, the supervisor running a job, the outbox delivering its
webhooks, the executor child rendering it). asyncio tasks and ``asyncio.to_thread`` copy the
context, so every record logged inside, by any logger, carries ``taskUUID``; a record logged
with ``extra={"taskUUID": ...}`` keeps its own. :func:`configure_logging` installs one root
handler (JSON when ``settings.observability.log_json``) with the filter that attaches it.

Secrets stay out of the logs: URLs carry them in their query strings (a webhook's ``?token=``,
a presigned PUT's signature, a ``/media`` link's ``sig``), so :class:`RedactFilter`, on the same
handler, cuts every URL and request path in a record down to scheme, host and path (httpx's
request lines, uvicorn's access log and our own messages alike). :func:`redact_url` does the
same for one URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TextIO

current_task: ContextVar[str | None] = ContextVar("wanflash_task_uuid", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(task_suffix)s"


@contextlib.contextmanager
def task_context(task_uuid: str | None) -> Iterator[None]:
    """Records logged inside carry ``taskUUID`` (nothing changes when ``task_uuid`` is falsy)."""
    if not task_uuid:
        yield
        return
    token = current_task.set(task_uuid)
    try:
        yield
    finally:
        current_task.reset(token)


class TaskFilter(logging.Filter):
    """Attach the current task's id to every record (``record.taskUUID``; ``None`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        tu = getattr(record, "taskUUID", None)
        if tu is None:
            tu = record.taskUUID = current_task.get()
        record.task_suffix = f" [task {tu}]" if tu else ""
        return True


_URL_QUERY = re.compile(r"((?:[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)|(?<![\w/])/[^\s?#'\"<>]*)[?#][^\s'\"<>]*")


def redact_url(url: object) -> str:
    """``url`` (or any text holding URLs) with every query string and fragment removed."""
    return _URL_QUERY.sub(r"\1", str(url))


class RedactFilter(logging.Filter):
    """Remove query strings (tokens, signatures) from URLs in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and ("?" in record.msg or "#" in record.msg):
            record.msg = redact_url(record.msg)
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, dict) and args:
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        return True


def _redact_arg(value: object) -> object:
    # Numbers keep their type (for %d); anything else whose text holds a query string (a str, an
    # httpx.URL, an exception quoting a URL) is replaced by its redacted text.
    if value is None or isinstance(value, (int, float)):
        return value
    text = str(value)
    return redact_url(text) if ("?" in text or "#" in text) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, taskUUID (when about a task), process, exc."""

    def __init__(self, process_label: str | None = None) -> None:
        super().__init__()
        self.process_label = process_label

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tu = getattr(record, "taskUUID", None)
        if tu:
            out["taskUUID"] = tu
        out["process"] = self.process_label or record.processName
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def make_handler(*, json_lines: bool, stream: TextIO | None = None, process_label: str | None = None
                 ) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(TaskFilter())
    handler.addFilter(RedactFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter(process_label))
    else:
        prefix = f"{process_label} " if process_label else ""
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(levelname)s", prefix + "%(levelname)s")))
    return handler


def configure_logging(*, json_lines: bool, level: int = logging.INFO, stream: TextIO | None = None,
                      process_label: str | None = None) -> logging.Handler:
    """Replace the root handlers with one (JSON lines or text) that tags task records."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = make_handler(json_lines=json_lines, stream=stream, process_label=process_label)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(json_lines)  # warnings.warn output becomes records, not raw stderr text
    return handler

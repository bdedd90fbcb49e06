"""``uploadEndpoint``: HTTP PUT of an output's raw bytes to a user URL (e.g. an S3 presigned PUT URL).

Guarantees:

* the PUT goes through the SSRF guard (:mod:`wanflash.net.ssrf`): checked, pinned address; redirects
  are never followed (a 3xx is a failure); each attempt has one total deadline;
* the body is the file's bytes with ``Content-Length`` set (streamed from disk for a path); no
  ``Authorization`` or other auth headers are added, because a presigned URL carries its signature in
  the query string and extra signed-looking headers would break it. ``Content-Type`` is sent when given
  (a presign made with a ContentType signs ``content-type``, so it must be the same value);
* 5xx, 408, 429, timeouts and connection errors are retried with exponential backoff and full jitter
  (PUT is idempotent; S3 replaces the object), honouring ``Retry-After``;
* any other reply ends it with ``JobFailed(code="uploadFailed", retryable=False)`` whose message has
  the status and a short excerpt of the reply (S3's XML ``<Code>``/``<Message>`` when present), e.g.
  ``uploadEndpoint answered HTTP 403 (AccessDenied: Request has expired)``. Exhausted retries and an
  endpoint refused by the SSRF policy end the same way (re-running the generation would not help).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import JobFailed
from ..net.ssrf import FetchError, Resolver, URLRefused, guarded_request
from .webhook import parse_retry_after

RETRYABLE_STATUSES = frozenset({408, 429})
_CHUNK = 1024 * 1024
_EXCERPT = 300


def _file_stream(path: Path) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                yield chunk
        finally:
            f.close()

    return gen


def _excerpt(body: bytes) -> str:
    text = body[:4096].decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    msg = re.search(r"<Message>([^<]{1,200})</Message>", text)
    if code:
        return code.group(1) + (f": {msg.group(1)}" if msg else "")
    flat = " ".join(text.split())
    return flat[:_EXCERPT] + ("..." if len(flat) > _EXCERPT else "")


async def put_output(
    url: str,
    data: bytes | str | os.PathLike[str],
    *,
    content_type: str | None,
    allow_loopback: bool = False,
    max_attempts: int = 4,
    base_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
    attempt_timeout_s: float = 300.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    resolver: Resolver | None = None,
) -> None:
    """PUT ``data`` (bytes, or a path streamed from disk) to ``url``; raise ``JobFailed`` on failure."""
    if isinstance(data, bytes):
        content: bytes | Callable[[], AsyncIterator[bytes]] = data
        length = len(data)
    else:
        path = Path(data)
        try:
            length = path.stat().st_size
        except OSError as e:
            why = e.strerror or "I/O error"
            raise JobFailed("uploadFailed", f"The output file could not be read for the upload ({why}).",
                            retryable=False) from None
        content = _file_stream(path)
    headers = {"content-length": str(length)}
    if content_type:
        headers["content-type"] = content_type

    last = ""
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            resp = await guarded_request(
                "PUT", url, headers=headers, content=content, allow_loopback=allow_loopback,
                deadline_s=attempt_timeout_s, max_response_bytes=16 * 1024, resolver=resolver,
            )
        except URLRefused as e:
            raise JobFailed("uploadFailed", f"uploadEndpoint refused: {e.reason}", retryable=False) from None
        except FetchError as e:
            if not e.retryable:
                raise JobFailed("uploadFailed", f"uploadEndpoint failed: {e.reason}", retryable=False) from None
            last = e.reason
        else:
            if 200 <= resp.status < 300:
                return
            detail = _excerpt(resp.body)
            last = f"HTTP {resp.status}" + (f" ({detail})" if detail else "")
            if 300 <= resp.status < 400:
                raise JobFailed(
                    "uploadFailed", f"uploadEndpoint answered {last}; redirects are not followed", retryable=False
                )
            if resp.status < 500 and resp.status not in RETRYABLE_STATUSES:
                raise JobFailed("uploadFailed", f"uploadEndpoint answered {last}", retryable=False)
            retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
        if attempt < max_attempts:
            delay = rng() * min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
            if retry_after is not None:
                delay = max(delay, min(retry_after, max_delay_s))
            await sleep(delay)
    raise JobFailed("uploadFailed", f"uploadEndpoint failed after {max_attempts} attempts: {last}", retryable=False)

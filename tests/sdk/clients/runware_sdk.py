"""Client run by the tests with the real `runware-sdk` 1.8.0 (isolated on PYTHONPATH).

argv[1] is a JSON job: {"transport": "rest"|"websocket", "ws_url", "http_url", "key", "image",
"tasks": [...], "errors": bool}. "$IMAGE" in tasks becomes the uploaded imageUUID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from typing import Any

from runware import Runware
from runware.errors import RunwareError


def _subst(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return subs.get(value, value)
    if isinstance(value, list):
        return [_subst(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, subs) for k, v in value.items()}
    return value


def _code(exc: RunwareError) -> str:
    return f"{exc.code}|{exc.status_code}|{exc.message[:80]}"


async def main(job: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"uploads": {}, "results": [], "errors": {}}
    cfg = dict(transport=job["transport"], ws_base_url=job["ws_url"], http_base_url=job["http_url"])
    async with Runware(api_key=job["key"], **cfg) as rw:
        subs: dict[str, str] = {}
        if job.get("image"):
            with open(job["image"], "rb") as f:
                data = "data:image/png;base64," + base64.b64encode(f.read()).decode()
            up = await rw.image_upload({"image": data})
            out["uploads"]["image"] = dict(up[0])
            subs["$IMAGE"] = up[0]["imageUUID"]
        for task in job.get("tasks", []):
            out["results"].append([dict(r) for r in await rw.run(_subst(task, subs))])
        if job.get("errors"):
            async def code_of(coro: Any) -> str:
                try:
                    await coro
                except RunwareError as exc:
                    return _code(exc)
                return "no error"

            base = {"taskType": "videoInference", "model": "alibaba:wan@2.6-flash", "positivePrompt": "p",
                    "resolution": "720p", "duration": 2}
            out["errors"]["invalid"] = await code_of(rw.run({**base, "duration": 99}))
            out["errors"]["unknown"] = await code_of(rw.get_response({"taskUUID": str(uuid.uuid4())}))
    try:
        async with Runware(api_key="wrong-key", **cfg) as bad:
            await bad.run({"taskType": "videoInference", "model": "alibaba:wan@2.6-flash", "positivePrompt": "p",
                           "resolution": "720p", "duration": 2})
        out["errors"]["bad_key"] = "no error"
    except RunwareError as exc:
        out["errors"]["bad_key"] = _code(exc)
    return out


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.argv[1])))
    print("RESULT " + json.dumps(result))

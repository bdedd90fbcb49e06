"""Client run by the tests with the real `runware` 0.5.24 SDK (isolated on PYTHONPATH).

argv[1] is a JSON job: {"url", "key", "image", "audio", "tasks": [...], "errors": bool}.
In tasks, "$IMAGE" / "$AUDIO" are replaced by the uploaded imageUUID / mediaUUID.
Prints one JSON object on stdout: {"uploads": ..., "results": [[video...], ...], "errors": {...}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import asdict
from typing import Any

import runware
from runware import IAlibabaProviderSettings, IVideoInference, Runware, RunwareAPIError


def _subst(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return subs.get(value, value)
    if isinstance(value, list):
        return [_subst(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, subs) for k, v in value.items()}
    return value


def _request(task: dict[str, Any]) -> IVideoInference:
    fields = {k: v for k, v in task.items() if k != "taskType"}
    alibaba = (fields.pop("providerSettings", None) or {}).get("alibaba")
    if alibaba is not None:
        fields["providerSettings"] = IAlibabaProviderSettings(**alibaba)
    return IVideoInference(**fields)


async def main(job: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"version": runware.__version__, "uploads": {}, "results": [], "errors": {}}
    rw = Runware(api_key=job["key"], url=job["url"])
    await rw.connect()
    subs: dict[str, str] = {}
    if job.get("image"):
        up = await rw.uploadImage(job["image"])  # a local path: the SDK sends imageUpload with a data URI
        out["uploads"]["image"] = {"imageUUID": up.imageUUID, "imageURL": up.imageURL}
        subs["$IMAGE"] = up.imageUUID
    if job.get("audio"):
        media = await rw.uploadMedia(job["audio"])
        out["uploads"]["audio"] = {"mediaUUID": media.mediaUUID}
        subs["$AUDIO"] = media.mediaUUID
    for task in job.get("tasks", []):
        req = _request(_subst(task, subs))
        ack = await rw.videoInference(requestVideo=req)
        videos = await rw.getResponse(taskUUID=ack.taskUUID, numberResults=task.get("numberResults") or 1)
        out["results"].append([{k: v for k, v in asdict(v).items() if v is not None} for v in videos])

    if job.get("errors"):
        async def code_of(coro: Any) -> str:
            try:
                await coro
            except RunwareAPIError as exc:
                return str(exc.code)
            return "no error"

        base = {"model": "alibaba:wan@2.6-flash", "positivePrompt": "p", "resolution": "720p", "duration": 2}
        out["errors"]["invalid"] = await code_of(rw.videoInference(requestVideo=IVideoInference(**{**base,
                                                                                                   "duration": 99})))
        tu = str(uuid.uuid4())
        await rw.videoInference(requestVideo=IVideoInference(**base, taskUUID=tu))
        out["errors"]["duplicate"] = await code_of(rw.videoInference(requestVideo=IVideoInference(**base,
                                                                                                  taskUUID=tu)))
        out["errors"]["unknown"] = await code_of(rw.getResponse(taskUUID=str(uuid.uuid4())))
        bad = Runware(api_key="wrong-key", url=job["url"])
        await bad.connect()
        try:
            await bad.videoInference(requestVideo=IVideoInference(**base))
            out["errors"]["bad_key"] = "no error"
        except ConnectionError as exc:
            out["errors"]["bad_key"] = f"ConnectionError: {exc}"
        await bad.disconnect()
    await rw.disconnect()
    return out


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.argv[1])))
    print("RESULT " + json.dumps(result))

"""getResponse items from task rows: processing x N, success x N together, errors."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.jobs.records import no_webhooks, output
from wanflash.delivery.responses import not_found, poll_reply
from wanflash.jobs.model import JobSpec
from wanflash.jobs.store import SqliteJobSource


def _spec(n: int = 2, ttl: int | None = None) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model="alibaba:wan@2.6-flash", profile="tiny", positive_prompt="p",
                   width=1280, height=720, resolution_class="720p", duration=2, fps=16, num_frames=32,
                   seeds=[5, 6][:n], number_results=n, cost=0.2, include_cost=True, ttl=ttl)


def sign(key: str, exp: float) -> str:
    return f"http://h/media/{key}?exp={int(exp)}"


def test_lifecycle(tmp_path: Path) -> None:
    store = SqliteJobSource(tmp_path / "db", outbox=no_webhooks)
    s = _spec(ttl=120)
    store.insert(s, now=1000)
    r = poll_reply(store.get(s.task_uuid), sign, default_ttl=60)  # type: ignore[arg-type]
    assert r.data == [{"taskType": "videoInference", "taskUUID": s.task_uuid, "status": "processing"}] * 2
    c = store.claim("w", 30, now=1001)
    assert c
    store.progress(s.task_uuid, 1, 1, 4, "denoise")
    r = poll_reply(store.get(s.task_uuid), sign, default_ttl=60)  # type: ignore[arg-type]
    assert all(i["status"] == "processing" and i["progress"] == 25.0 for i in r.data)
    assert all((i["stage"], i["progressStep"], i["progressTotal"]) == ("denoise", 1, 4) for i in r.data)
    assert all("videoURL" not in i and "videoUUID" not in i for i in r.data)
    results = [output(f"v{i}", seed=5 + i, key=f"outputs/{s.task_uuid}/{i}.mp4") for i in range(2)]
    store.complete(s.task_uuid, 1, results, now=2000)
    r = poll_reply(store.get(s.task_uuid), sign, default_ttl=60)  # type: ignore[arg-type]
    assert r.status == 200 and [i["videoUUID"] for i in r.data] == ["v0", "v1"]
    assert r.data[0] == {"taskType": "videoInference", "taskUUID": s.task_uuid, "status": "success",
                         "videoUUID": "v0", "videoURL": f"http://h/media/outputs/{s.task_uuid}/0.mp4?exp=2120",
                         "seed": 5, "cost": 0.1}
    f = _spec(n=1)
    store.insert(f)
    store.claim("w", 30)
    store.fail(f.task_uuid, 1, "inferenceError", "bad")
    r = poll_reply(store.get(f.task_uuid), sign, default_ttl=60)  # type: ignore[arg-type]
    assert r.data == [] and r.status == 200  # the poll succeeded; the task's failure is in errors[]
    assert r.errors == [{"code": "inferenceError", "message": "bad", "taskType": "videoInference",
                         "taskUUID": f.task_uuid}]
    nf = not_found("abc")
    assert nf.status == 404 and nf.errors[0]["code"] == "taskFailedOrNotFound" and nf.errors[0]["taskUUID"] == "abc"
    store.close()

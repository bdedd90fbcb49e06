"""The API plans for what the workers publish, not for its own settings (issue 16, step 3).

The rule itself (:func:`wanflash.api.fleet.select`) on records, then a ``wanflash api`` app whose
own settings are the defaults (tiny, 16 fps, an audio model) in front of a worker that published
TI2V-5B at 24 fps without an audio model: its plans, refusals, /health and the playground's
estimate all follow the worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.support import API_KEY, make_settings
from tests.jobs.records import no_webhooks
from wanflash.api.fleet import select
from wanflash.compose import build_app
from wanflash.contract.validation import parse_video_task
from wanflash.errors import InvalidRequest
from wanflash.jobs.capabilities import WorkerCapabilities, WorkerRecord
from wanflash.jobs.source import db_path
from wanflash.jobs.store import SqliteJobSource

TINY = WorkerCapabilities(profile="tiny", fps=16, max_clip_frames=81, native_audio="ltx2")
FIVE_B = WorkerCapabilities(profile="wan2.2-ti2v-5b", fps=24, max_clip_frames=121, native_audio="none")
A14B = WorkerCapabilities(profile="wan2.2-i2v-a14b", fps=16, max_clip_frames=81, native_audio="ltx2",
                          safety_detector="nudenet")
NOW = 1000.0


def task(**kw: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
            "positivePrompt": "a cat", "resolution": "720p", "duration": 2, **kw}


SILENT = {"providerSettings": {"alibaba": {"audio": False}}}


def live(caps: WorkerCapabilities, n: int = 1, seen: float = NOW) -> list[WorkerRecord]:
    return [WorkerRecord(f"{caps.profile}-{i}-{uuid.uuid4().hex[:4]}", caps, seen, seen + 30) for i in range(n)]


def dead(caps: WorkerCapabilities, seen: float) -> list[WorkerRecord]:
    return [WorkerRecord(f"{caps.profile}-gone", caps, seen, seen + 30)]


def pick(records: list[WorkerRecord], own: WorkerCapabilities | None = None, **kw: Any) -> WorkerCapabilities:
    return select(parse_video_task(task(**kw)), records, own=own, now=NOW)


def refusal(records: list[WorkerRecord], own: WorkerCapabilities | None = None, **kw: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        pick(records, own, **kw)
    return info.value


def test_live_workers_decide_over_the_api_settings() -> None:
    assert pick(live(FIVE_B), own=TINY, **SILENT) == FIVE_B
    assert pick(live(FIVE_B) + live(A14B), **SILENT) == A14B  # a tie: the first name, so every replica agrees
    assert pick(live(FIVE_B, 2) + live(A14B), **SILENT) == FIVE_B  # the profile most workers serve
    # ... unless it lacks what the request needs: generated sound takes a worker with an audio model.
    assert pick(live(FIVE_B, 2) + live(A14B)) == A14B
    assert pick(live(FIVE_B, 2) + live(A14B), **SILENT, safety={"checkContent": True}) == A14B


def test_without_live_workers() -> None:
    gone = dead(FIVE_B, seen=NOW - 3600)
    assert pick(gone, own=TINY) == TINY  # `wanflash serve`: its own worker is about to publish
    assert pick(gone, **SILENT) == FIVE_B  # `wanflash api`: queue for the last-known workers
    assert pick(dead(A14B, seen=NOW - 7200) + gone, **SILENT) == FIVE_B  # the most recently seen
    err = refusal([])
    assert err.status == 503
    assert [(e.code, e.parameter) for e in err.errors] == [("noWorkerAvailable", "model")]


def test_refusals_name_the_parameter_nothing_serves() -> None:
    err = refusal(live(FIVE_B))  # sound must be generated; no worker has an audio model
    assert err.status == 400
    assert [(e.code, e.parameter) for e in err.errors] == [("unsupportedAudio", "providerSettings.alibaba.audio")]
    assert "No worker of this service has an audio model" in err.errors[0].message
    err = refusal(live(FIVE_B), safety={"mode": "full"})
    assert [(e.code, e.parameter) for e in err.errors] == [("unsupportedAudio", "providerSettings.alibaba.audio"),
                                                           ("unsupportedSafetyCheck", "safety.mode")]
    checker = FIVE_B.model_copy(update={"safety_detector": "clip"})
    err = refusal(live(checker) + live(TINY), safety={"checkContent": True})  # each exists, never together
    assert [(e.code, e.parameter) for e in err.errors] == [("unsupportedSafetyCheck", "safety.checkContent")]
    assert pick(live(checker) + live(TINY), safety={"checkContent": True}, **SILENT) == checker
    # An input track needs no audio model.
    assert pick(live(FIVE_B), inputs={"audio": "https://example.com/a.mp3"}) == FIVE_B


def test_an_api_plans_with_the_workers_profile(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, playground=True)  # the API's own: tiny, 16 fps, an audio model
    assert settings.engine.profile == "tiny" and settings.audio.model == "ace-step"
    worker = SqliteJobSource(db_path(settings.data_dir), outbox=no_webhooks)  # a worker process on the same store
    worker.publish_worker("gpu-0", FIVE_B, 60)
    hdr = {"Authorization": f"Bearer {API_KEY}"}
    try:
        with TestClient(build_app(settings, worker=False)) as client:
            t = task(**SILENT)
            r = client.post("/v1", json=[t], headers=hdr)
            assert r.status_code == 200, r.json()
            rec = worker.get(t["taskUUID"])
            assert rec is not None
            assert (rec.spec.profile, rec.spec.fps, rec.spec.num_frames, rec.spec.cost) == ("wan2.2-ti2v-5b", 24, 48,
                                                                                            0.05)
            claim = worker.claim("gpu-0", 30, queues=FIVE_B.queues())  # it waits in the worker's queue
            assert claim and claim.task_uuid == t["taskUUID"]
            # The API's settings would accept generated sound; its worker cannot make it.
            r = client.post("/v1", json=[task()], headers=hdr)
            assert r.status_code == 400
            assert [(e["code"], e["parameter"]) for e in r.json()["errors"]] == [
                ("unsupportedAudio", "providerSettings.alibaba.audio")]
            e = client.post("/playground/estimate", json={"task": task(**SILENT)}).json()
            assert (e["fps"], e["numFrames"]) == (24, 48)
            c = client.get("/playground/config.json").json()
            assert (c["profile"], c["fps"]) == ("wan2.2-ti2v-5b", 24)
            health = client.get("/health").json()
            assert health["workers"] == [{**FIVE_B.model_dump(), "workers": 1}]
    finally:
        worker.close()


def test_an_api_with_no_worker_ever_refuses(tmp_path: Path) -> None:
    with TestClient(build_app(make_settings(tmp_path), worker=False)) as client:
        r = client.post("/v1", json=[task(**SILENT)], headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 503
        (err,) = r.json()["errors"]
        assert (err["code"], err["parameter"], err["taskType"]) == ("noWorkerAvailable", "model", "videoInference")
        assert client.get("/health").json()["workers"] == []

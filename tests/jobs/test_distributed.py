"""Distributed mode end to end: ``wanflash migrate``, one ``wanflash api`` and two ``wanflash worker``
processes over a real PostgreSQL on loopback. Ten tasks go in over REST; one worker (its whole
process group, like a crashed node) is SIGKILLed while it runs a task; every task still completes
exactly once: one success result each, one webhook each, one stored output each. A second test
runs an API and a worker over PostgreSQL and S3 (s3rver): the worker reads the inputs the API put
in the bucket, stores its output there, and every link it renders is a presigned S3 GET. A third
runs an API whose own settings (tiny, 16 fps, an audio model) differ from its worker's (TI2V-5B,
24 fps, no audio model): the video has the worker's frame rate and frame count, the cost its
silent rate, and generated sound is refused."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
from PIL import Image

from tests.api.support import API_KEY
from tests.delivery.receiver import receiver
from tests.jobs.pgserver import PgServer
from tests.storage.conftest import S3Server, s3_server  # noqa: F401  (the fixture, shared)

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "tests.worker.fixture_pipelines:paced"  # 10 steps x 0.1 s per job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(env: dict[str, str], *args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "wanflash.cli", *args], cwd=ROOT, env=env, **kw)


def start_worker(env: dict[str, str], log: Path, factory: str = "tests.sdk.fast_pipeline:factory"
                 ) -> subprocess.Popen[bytes]:
    """``wanflash worker`` on the CPU over ``factory``, logging to ``log``, in its own process group
    (killing the group is a crashed node)."""
    return run_cli(env, "worker", "--gpus", "cpu", "--pipeline-factory", factory, start_new_session=True,
                   stderr=open(log, "ab"))


def post(url: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    r = httpx.post(url, json=tasks, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    return r.json()  # type: ignore[no-any-return]


def test_api_and_two_workers_survive_a_killed_worker(pg_server: PgServer, tmp_path: Path) -> None:
    db = pg_server.create_database()
    port = free_port()
    env = {**os.environ, "WANFLASH_DATABASE_URL": db, "WANFLASH_DATA_DIR": str(tmp_path / "data"),
           "WANFLASH_API_KEYS": API_KEY, "WANFLASH_ALLOW_LOOPBACK_FETCH": "true", "WANFLASH_PORT": str(port),
           "WANFLASH_PUBLIC_URL": f"http://127.0.0.1:{port}", "WANFLASH_URL_SECRET": "s" * 32,
           "WANFLASH_HEARTBEAT_SECONDS": "0.3", "WANFLASH_LEASE_SECONDS": "3", "WANFLASH_EXECUTOR": "inprocess"}
    for _ in range(2):  # idempotent
        assert run_cli(env, "migrate", stdout=subprocess.DEVNULL).wait(60) == 0

    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = run_cli(env, "api", stderr=open(tmp_path / "api.log", "ab"))
        procs.append(api)
        workers = [start_worker(env, tmp_path / "w.log", PIPELINE) for _ in range(2)]
        procs += workers
        base = f"http://127.0.0.1:{port}"
        _wait_api(base, api, workers=2)

        with receiver() as hooks:
            ids = [str(uuid.uuid4()) for _ in range(10)]
            reply = post(base + "/v1", [{"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash",
                                         "positivePrompt": "distributed", "width": 960, "height": 960, "duration": 2,
                                         "seed": i + 1, "webhookURL": hooks.url + "/hook"}
                                        for i, tu in enumerate(ids)])
            assert sorted(d["taskUUID"] for d in reply["data"]) == sorted(ids), reply

            # Kill the first worker while it holds a running task.
            victim = workers[0]
            killed_task = None
            deadline = time.monotonic() + 30
            with psycopg.connect(db) as conn:
                while killed_task is None:
                    assert time.monotonic() < deadline, "no task ever ran on the first worker"
                    for tu, owner in conn.execute("SELECT task_uuid, lease_owner FROM wanflash_tasks "
                                                  "WHERE state='running' AND progress_step > 0").fetchall():
                        pid = int(owner.split(":")[1])
                        try:
                            if os.getpgid(pid) == victim.pid:
                                killed_task = tu
                        except ProcessLookupError:
                            pass
                    conn.commit()
                    time.sleep(0.05)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)

            results: dict[str, list[dict[str, Any]]] = {}
            deadline = time.monotonic() + 45
            while len(results) < len(ids):
                assert time.monotonic() < deadline, f"unfinished: {set(ids) - set(results)}"
                for tu in set(ids) - set(results):
                    r = post(base + "/v1", [{"taskType": "getResponse", "taskUUID": tu}])
                    assert not r.get("errors"), r
                    if r["data"][0].get("status") == "success":
                        results[tu] = r["data"]
                time.sleep(0.2)

            # Webhooks are delivered by the API process from the shared outbox.
            deadline = time.monotonic() + 15
            while len(hooks.requests) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # a duplicate, if there were one, would arrive now
            hook_ids = Counter(r.headers["webhook-id"] for r in hooks.requests)

        for tu, items in results.items():
            assert len(items) == 1 and items[0]["videoURL"] and items[0]["taskUUID"] == tu
            assert httpx.get(items[0]["videoURL"], timeout=10).status_code == 200  # any replica serves the media
        assert hook_ids == Counter({f"msg_{tu}_0": 1 for tu in ids})
        assert {json.loads(r.body)["taskUUID"] for r in hooks.requests} == set(ids)
        outputs = tmp_path / "data" / "media" / "outputs"
        assert sorted(p.name for p in outputs.iterdir()) == sorted(ids)
        assert all(len(list((outputs / tu).iterdir())) == 1 for tu in ids)
        with psycopg.connect(db) as conn:
            rows = dict(conn.execute("SELECT task_uuid, attempt FROM wanflash_tasks WHERE state='succeeded'").fetchall())
            tokens = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo','doing')").fetchone()
        assert set(rows) == set(ids)
        assert rows[killed_task] == 2  # re-run by the surviving worker
        assert tokens == (0,)  # no dispatch token left behind
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the API (first) and the workers (each its own process group), then kill what lingers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL) if p in procs[1:] else p.kill()


def _wait_success(base: str, tu: str, worker_log: Path, timeout: float = 60) -> dict[str, Any]:
    """Poll ``tu`` until it succeeds: the last reply (an error reply fails, with the worker's log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        r = post(base + "/v1", [{"taskType": "getResponse", "taskUUID": tu}])
        assert not r.get("errors"), (r, worker_log.read_text()[-3000:])
        if r["data"][0].get("status") == "success":
            return r
        assert time.monotonic() < deadline, "the task did not finish"
        time.sleep(0.2)


def _wait_api(base: str, api: subprocess.Popen[bytes], workers: int = 1) -> dict[str, Any]:
    """Wait until the API answers and ``workers`` workers have published what they serve (before
    that, ``wanflash api`` refuses tasks with noWorkerAvailable); returns /health."""
    deadline = time.monotonic() + 30
    while True:
        try:
            health = httpx.get(base + "/health", timeout=1).json()
            if health.get("role") == "api" and sum(w["workers"] for w in health["workers"]) >= workers:
                return health  # type: ignore[no-any-return]
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and api.poll() is None, "API did not start, or no worker published"
        time.sleep(0.1)


def test_api_and_worker_share_the_s3_store(pg_server: PgServer, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    db = pg_server.create_database()
    port = free_port()
    s3 = {f"WANFLASH_{k.upper()}": str(v) for k, v in s3_server.settings_kw().items()}
    # Separate data dirs: nothing reaches the worker through a shared disk, only through S3 and PostgreSQL.
    common = {**os.environ, **s3, "WANFLASH_DATABASE_URL": db, "WANFLASH_API_KEYS": API_KEY,
              "WANFLASH_ALLOW_LOOPBACK_FETCH": "true", "WANFLASH_PORT": str(port),
              "WANFLASH_PUBLIC_URL": f"http://127.0.0.1:{port}", "WANFLASH_URL_SECRET": "s" * 32,
              "WANFLASH_EXECUTOR": "inprocess"}
    api_env = {**common, "WANFLASH_DATA_DIR": str(tmp_path / "api")}
    metrics_port = free_port()
    worker_env = {**common, "WANFLASH_DATA_DIR": str(tmp_path / "worker"),
                  "WANFLASH_WORKER_METRICS_PORT": str(metrics_port), "WANFLASH_METRICS_TOKEN": "mt"}
    assert run_cli(api_env, "migrate", stdout=subprocess.DEVNULL).wait(60) == 0
    buf = io.BytesIO()
    Image.new("RGB", (320, 320), (200, 40, 40)).save(buf, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = run_cli(api_env, "api", stderr=open(tmp_path / "api.log", "ab"))
        procs.append(api)
        procs.append(start_worker(worker_env, tmp_path / "w.log"))
        base = f"http://127.0.0.1:{port}"
        _wait_api(base, api)
        with receiver() as hooks:
            tu = str(uuid.uuid4())
            reply = post(base + "/v1", [{"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash",
                                         "positivePrompt": "over s3", "resolution": "720p", "duration": 2,
                                         "inputs": {"frameImages": [{"image": image}]},
                                         "providerSettings": {"alibaba": {"audio": False}},
                                         "webhookURL": hooks.url + "/hook"}])
            assert reply.get("data") == [{"taskType": "videoInference", "taskUUID": tu}], reply
            r = _wait_success(base, tu, tmp_path / "w.log")
            deadline = time.monotonic() + 15
            while not hooks.requests and time.monotonic() < deadline:
                time.sleep(0.1)
            assert hooks.requests, "no webhook"
            hooked = json.loads(hooks.requests[0].body)
        (item,) = r["data"]
        for url in (item["videoURL"], hooked["videoURL"]):
            assert url.startswith(s3_server.endpoint) and "X-Amz-Signature=" in url, url
            got = httpx.get(url, timeout=10)
            assert got.status_code == 200 and got.content[4:8] == b"ftyp"  # an MP4, served by S3
        assert not (tmp_path / "worker" / "media").exists()  # nothing went to the worker's local disk
        # The worker serves its own metrics (slot 0: the configured port), behind the metrics token.
        scrape = f"http://127.0.0.1:{metrics_port}/metrics"
        assert httpx.get(scrape, timeout=5).status_code == 401
        text = httpx.get(scrape, headers={"Authorization": "Bearer mt"}, timeout=5).text
        assert 'wanflash_stage_duration_seconds_count{stage="upload"} 1.0' in text
        assert 'wanflash_executor_state{state="ready"} 1.0' in text
        assert "wanflash_queue_depth" not in text  # the API reports the queue
    finally:
        _stop(procs)


def test_the_api_plans_for_its_workers_profile_not_its_own(pg_url: str, tmp_path: Path) -> None:
    from wanflash.media.probe import probe_file

    db = pg_url  # migrated by the fixture
    port = free_port()
    # The API keeps the defaults, as docs/deploy.md's compose file once did: tiny (16 fps), LTX-2 audio.
    api_env = {**os.environ, "WANFLASH_DATABASE_URL": db, "WANFLASH_DATA_DIR": str(tmp_path / "data"),
               "WANFLASH_API_KEYS": API_KEY, "WANFLASH_PORT": str(port), "WANFLASH_PUBLIC_URL": f"http://127.0.0.1:{port}",
               "WANFLASH_URL_SECRET": "s" * 32, "WANFLASH_HEARTBEAT_SECONDS": "0.3", "WANFLASH_LEASE_SECONDS": "3"}
    for k in ("WANFLASH_PROFILE", "WANFLASH_AUDIO_MODEL"):
        api_env.pop(k, None)
    worker_env = {**api_env, "WANFLASH_PROFILE": "wan2.2-ti2v-5b", "WANFLASH_AUDIO_MODEL": "none",
                  "WANFLASH_EXECUTOR": "inprocess"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = run_cli(api_env, "api", stderr=open(tmp_path / "api.log", "ab"))
        procs.append(api)
        procs.append(start_worker(worker_env, tmp_path / "w.log"))
        base = f"http://127.0.0.1:{port}"
        (published,) = _wait_api(base, api)["workers"]
        assert (published["profile"], published["fps"], published["native_audio"]) == ("wan2.2-ti2v-5b", 24, "none")

        task = {"taskType": "videoInference", "model": "alibaba:wan@2.6-flash", "positivePrompt": "planned for 5B",
                "width": 960, "height": 960, "duration": 2, "includeCost": True}
        # Generated sound: the API's own settings have an audio model, its only worker has none.
        refused = post(base + "/v1", [{**task, "taskUUID": str(uuid.uuid4())}])
        assert [(e["code"], e["parameter"]) for e in refused["errors"]] == [
            ("unsupportedAudio", "providerSettings.alibaba.audio")], refused
        tu = str(uuid.uuid4())
        reply = post(base + "/v1", [{**task, "taskUUID": tu, "providerSettings": {"alibaba": {"audio": False}}}])
        assert reply.get("data") == [{"taskType": "videoInference", "taskUUID": tu}], reply
        r = _wait_success(base, tu, tmp_path / "w.log")
        (item,) = r["data"]
        assert item["cost"] == 0.05  # 720p-class silent: 0.025 x 2 s
        video = tmp_path / "out.mp4"
        video.write_bytes(httpx.get(item["videoURL"], timeout=10).content)
        info = probe_file(video)
        assert (info.fps, info.frames, info.width, info.height) == (24, 48, 960, 960)  # the worker's 24 fps

        # A mixed fleet: a tiny worker with an audio model joins. Generated sound is now served, planned
        # for that worker's profile (16 fps) and claimed from its queue only: were the idle 5B worker to
        # take it, it would refuse the spec (profileMismatch) and the task would fail.
        tiny_env = {**api_env, "WANFLASH_PROFILE": "tiny", "WANFLASH_AUDIO_MODEL": "ace-step",
                    "WANFLASH_EXECUTOR": "inprocess"}
        procs.append(start_worker(tiny_env, tmp_path / "w2.log"))
        workers = {(w["profile"], w["native_audio"]) for w in _wait_api(base, api, workers=2)["workers"]}
        assert workers == {("wan2.2-ti2v-5b", "none"), ("tiny", "ace-step")}
        tu = str(uuid.uuid4())
        reply = post(base + "/v1", [{**task, "taskUUID": tu}])
        assert reply.get("data") == [{"taskType": "videoInference", "taskUUID": tu}], reply
        (item,) = _wait_success(base, tu, tmp_path / "w2.log")["data"]
        video.write_bytes(httpx.get(item["videoURL"], timeout=10).content)
        assert (probe_file(video).fps, probe_file(video).frames) == (16, 32)  # the tiny worker's 16 fps
    finally:
        _stop(procs)

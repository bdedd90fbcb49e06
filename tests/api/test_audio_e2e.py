"""Audio end to end over REST: the live server with the tiny Wan + the tiny default audio backend (subprocess executor).

* default ``audio`` (true): the file has an AAC track as long as the video, billed at the audio rate;
* ``audio: false``: no audio stream, billed at the silent rate;
* ``inputs.audio`` as an uploaded mediaUUID with no ``duration``: the clip follows the track
  (2.4 s -> 2 s), the output carries the track's samples (Opus in WEBM), billed at the audio rate;
* a bad, a too long and a too large track: a 400 naming ``inputs.audio``.
"""

from __future__ import annotations

import base64
import importlib.util
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import API_KEY, make_settings
from tests.media.audio_support import AUDIO_FRAME, chirp, snr_db, wav_bytes
from wanflash.media.probe import probe_file
from wanflash.testing import live_server
from wanflash.worker.render import decode_audio

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("diffusers") is None,
                       reason="the engine (torch, diffusers) is not installed"),
]
HDR = {"Authorization": f"Bearer {API_KEY}"}


def _task(**kw: Any) -> dict[str, Any]:
    t = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
         "positivePrompt": "waves on a beach", "width": 1280, "height": 720, "seed": 9, "outputQuality": 20,
         "includeCost": True}
    t.update(kw)
    return t


def _wait(http: httpx.Client, tu: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = http.post("/v1", json=[{"taskType": "getResponse", "taskUUID": tu}]).json()
        if "errors" in reply or reply["data"][0]["status"] != "processing":
            return reply
        time.sleep(0.3)
    raise AssertionError(f"task {tu} did not finish in {timeout} s")


def _download(http: httpx.Client, item: dict[str, Any], dest: Path) -> Path:
    r = http.get(item["videoURL"])
    assert r.status_code == 200
    dest.write_bytes(r.content)
    return dest


def test_audio_through_the_api(tmp_path: Path) -> None:
    # 300 kB input cap: the 2.4 s mono 48 kHz track (230 kB) fits, a 4 s 44.1 kHz one (353 kB) does not.
    settings = make_settings(tmp_path / "data", executor="subprocess", profile="tiny", max_input_bytes=300_000,
                             max_audio_seconds=3.0)
    track = chirp(2.4, 48000, channels=1)
    with live_server(settings) as server, httpx.Client(base_url=server.http_url, headers=HDR, timeout=30) as http:
        up = http.post("/v1", json=[{"taskType": "mediaStorage", "taskUUID": str(uuid.uuid4()), "operation": "upload",
                                     "media": base64.b64encode(wav_bytes(track, 48000)).decode()}])
        media_uuid = up.json()["data"][0]["mediaUUID"]

        def b64wav(seconds: float, rate: int) -> str:
            return base64.b64encode(wav_bytes(chirp(seconds, rate, channels=1), rate)).decode()

        bad = {"garbage": ("invalidAudio", base64.b64encode(b"RIFF" + bytes(range(256)) * 8).decode()),
               "too long": ("audioTooLong", b64wav(3.2, 16000)),
               "too large": ("inputTooLarge", b64wav(4.0, 44100))}
        for name, (code, data) in bad.items():
            r = http.post("/v1", json=[_task(duration=2, inputs={"audio": data})])
            assert r.status_code == 400, name
            err = r.json()["errors"][0]
            assert (err["code"], err["parameter"]) == (code, "inputs.audio"), (name, err)

        tasks = {
            "native": _task(duration=2),
            "silent": _task(duration=2, providerSettings={"alibaba": {"audio": False}}),
            "track": _task(outputFormat="WEBM", inputs={"audio": media_uuid}),
        }
        for t in tasks.values():
            r = http.post("/v1", json=[t])
            assert r.status_code == 200, r.text
        items = {}
        for name, t in tasks.items():
            reply = _wait(http, t["taskUUID"])
            assert "errors" not in reply, (name, reply)
            items[name] = reply["data"][0]
            assert items[name]["status"] == "success"

        native = probe_file(_download(http, items["native"], tmp_path / "native.mp4"))
        assert (native.audio_codec, native.audio_rate, native.audio_channels) == ("aac", 48000, 2)
        assert 0 <= native.audio_duration - native.duration <= AUDIO_FRAME / 48000
        assert items["native"]["cost"] == pytest.approx(0.1)  # 720p with audio: 0.05/s x 2 s

        silent = probe_file(_download(http, items["silent"], tmp_path / "silent.mp4"))
        assert silent.audio_codec is None and silent.frames == 32
        assert items["silent"]["cost"] == pytest.approx(0.05)  # 720p silent: 0.025/s x 2 s

        path = _download(http, items["track"], tmp_path / "track.webm")
        info = probe_file(path)
        assert info.duration == pytest.approx(2.0)  # no duration: the 2.4 s track, rounded and clamped
        assert (info.audio_codec, info.audio_rate) == ("opus", 48000)
        assert snr_db(track[:, :96000], decode_audio(str(path)).samples) > 20
        assert items["track"]["cost"] == pytest.approx(0.1)  # an input track bills at the audio rate

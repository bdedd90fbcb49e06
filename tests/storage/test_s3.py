"""S3 store against a real S3-compatible server on loopback (s3rver, see conftest.py): keyed
round trips, presigned GETs fetched with plain httpx, expiry, the 7-day cap, and one REST task
end to end whose inputs and output live in the bucket."""

from __future__ import annotations

import base64
import io
import socket
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from tests.api.support import API_KEY, make_settings
from tests.storage.conftest import S3Server
from wanflash.config import Settings
from wanflash.storage import create_store
from wanflash.storage.base import InvalidKey, StorageUnavailable
from wanflash.storage.s3 import MAX_PRESIGN_SECONDS, S3Store
from wanflash.testing import live_server


def store_for(server: S3Server, tmp_path: Path, **kw: object) -> S3Store:
    settings = Settings(data_dir=tmp_path, **server.settings_kw(**kw))
    store = create_store(settings.storage, settings.data_dir)
    assert isinstance(store, S3Store)
    return store


def test_round_trip_under_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    s = store_for(s3_server, tmp_path)
    s.put_bytes("outputs/t/0.mp4", b"abc")
    assert s.read_bytes("outputs/t/0.mp4") == b"abc" and s.exists("outputs/t/0.mp4")
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: above boto3's 8 MiB multipart threshold
    s.put_file("uploads/u.bin", src)
    assert s.read_bytes("uploads/u.bin") == src.read_bytes()
    assert s.local_path("uploads/u.bin") is None
    # Objects live under the prefix, nothing outside it.
    listed = s.client.list_objects_v2(Bucket=s.bucket)["Contents"]
    mine = sorted(o["Key"] for o in listed if o["Key"].startswith(s.prefix))
    assert mine == [s.prefix + "outputs/t/0.mp4", s.prefix + "uploads/u.bin"]
    s.delete("outputs/t/0.mp4")
    assert not s.exists("outputs/t/0.mp4")
    with pytest.raises(FileNotFoundError):
        s.read_bytes("outputs/t/0.mp4")
    with pytest.raises(InvalidKey):
        s.put_bytes("../escape", b"")


def test_presigned_get_with_plain_http(s3_server: S3Server, tmp_path: Path) -> None:
    s = store_for(s3_server, tmp_path)
    s.put_bytes("outputs/t/0.mp4", b"video bytes")
    url = s.presigned_url("outputs/t/0.mp4", time.time() + 3600)
    assert url is not None and url.startswith(s3_server.endpoint + "/")
    q = parse_qs(urlsplit(url).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and 3590 <= int(q["X-Amz-Expires"][0]) <= 3600
    r = httpx.get(url)  # no credentials: the URL alone grants the read
    assert r.status_code == 200 and r.content == b"video bytes"
    assert r.headers["content-type"] == "video/mp4"


def test_expired_presign_is_rejected_and_never_minted(s3_server: S3Server, tmp_path: Path) -> None:
    s = store_for(s3_server, tmp_path)
    s.put_bytes("outputs/t/0.mp4", b"x")
    # X-Amz-Date has whole seconds (truncated): minted late in a second, a 1 s URL could be nearly
    # spent before its first use. Mint at the start of one, with 2 s, so the first read is in time.
    time.sleep(1.02 - time.time() % 1)
    url = s.presigned_url("outputs/t/0.mp4", time.time() + 2.999)
    assert url is not None and parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["2"]  # never past the expiry
    assert httpx.get(url).status_code == 200
    time.sleep(3.2)
    r = httpx.get(url)
    assert r.status_code == 403 and "expired" in r.text
    # Past its expiry the store gives no URL; MediaLinks then falls back to a /media link (410).
    assert s.presigned_url("outputs/t/0.mp4", time.time() - 1) is None


def test_ttl_is_capped_at_seven_days(s3_server: S3Server, tmp_path: Path) -> None:
    s = store_for(s3_server, tmp_path)
    s.put_bytes("outputs/t/0.mp4", b"x")
    now = time.time()
    url = s.presigned_url("outputs/t/0.mp4", now + 30 * 86400, now=now)
    assert url is not None and parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(MAX_PRESIGN_SECONDS)]
    assert httpx.get(url).status_code == 200  # the server refuses X-Amz-Expires above 604800 with 400
    over = s.client.generate_presigned_url("get_object", Params={"Bucket": s.bucket, "Key": s.prefix + "outputs/t/0.mp4"},
                                           ExpiresIn=MAX_PRESIGN_SECONDS + 1)
    assert httpx.get(over).status_code == 400  # why the cap exists


def test_unreachable_endpoint_is_storage_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connection refused
    s = S3Store("b", endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key="s",
                path_style=True, max_attempts=1)
    with pytest.raises(StorageUnavailable):
        s.put_bytes("outputs/t/0.mp4", b"x")


def test_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="S3_BUCKET"):
        Settings(data_dir=tmp_path, storage="s3")


def _post(server: Any, task: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.http_url + "/v1", json=[task], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_rest_task_end_to_end_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    """imageUpload and the task's output go to the bucket; both URLs are presigned S3 GETs; the
    uploaded image is read back from S3 by the worker (the first frame of the video is that image)."""
    settings = make_settings(tmp_path / "data", **s3_server.settings_kw())
    png = io.BytesIO()
    Image.new("RGB", (640, 360), (200, 40, 90)).save(png, format="PNG")
    with live_server(settings, pipeline_factory="wanflash.worker.executor:fake_pipeline") as server:
        up = _post(server, {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                            "image": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()})["data"][0]
        assert up["imageURL"].startswith(s3_server.endpoint + "/")
        assert httpx.get(up["imageURL"]).headers["content-type"] == "image/png"
        tu = str(uuid.uuid4())
        _post(server, {"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash",
                       "positivePrompt": "a pink card", "duration": 2, "resolution": "720p", "seed": 5,
                       "inputs": {"frameImages": [{"image": up["imageUUID"], "frame": "first"}]},
                       "providerSettings": {"alibaba": {"audio": False}}})
        deadline = time.monotonic() + 60
        while True:
            item = _post(server, {"taskType": "getResponse", "taskUUID": tu})["data"][0]
            if item["status"] == "success" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert item["status"] == "success", item
        url = item["videoURL"]
        assert url.startswith(s3_server.endpoint + "/") and "X-Amz-Signature=" in url
        r = httpx.get(url, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(r.content)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (1280, 720)
            first = next(container.decode(stream)).to_ndarray(format="rgb24")
        assert abs(first.reshape(-1, 3).mean(axis=0) - (200, 40, 90)).max() < 12  # lossy H.264
        # Nothing was written to the local media directory.
        media = Path(settings.data_dir) / "media"
        assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_expired_s3_link_falls_back_to_a_dead_server_link(s3_server: S3Server, tmp_path: Path) -> None:
    from wanflash.signing import UrlSigner
    from wanflash.storage.links import MediaLinks

    signer = UrlSigner(b"k")
    links = MediaLinks(store_for(s3_server, tmp_path), signer)
    assert links.url("outputs/t/0.mp4", time.time() + 60, "http://api").startswith(s3_server.endpoint + "/")
    dead = links.url("outputs/t/0.mp4", time.time() - 1, "http://api/")
    assert dead.startswith("http://api/media/outputs/t/0.mp4?")
    q = parse_qs(urlsplit(dead).query)
    assert signer.verify("/media/outputs/t/0.mp4", q["exp"][0], q["sig"][0]) == "expired"  # /media answers 410

"""What the API stores for an input image: the original bytes when a plain decode already gives the
normalised pixels (nothing to re-encode on the submit path), a normalised PNG otherwise; and an
imageUUID reference, which counts as a use of the upload."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.support import make_settings
from tests.jobs.records import no_webhooks
from wanflash.api.inputs import InputResolver, _Where
from wanflash.storage.local import LocalStore

WHERE = _Where("inputs.frameImages[0].image", "invalidImage", "videoInference", "t")


def store(tmp_path: Path, data: bytes) -> tuple[str, bytes, Image.Image]:
    storage = LocalStore(tmp_path / "media")
    resolver = InputResolver(make_settings(tmp_path).limits, None, storage)  # type: ignore[arg-type]
    ref = "data:image/x;base64," + base64.b64encode(data).decode()
    key, size = asyncio.run(resolver.store_image(ref, "inputs/t/image", WHERE))
    stored = storage.read_bytes(key)
    with Image.open(io.BytesIO(stored)) as im:  # what the worker does
        worker_view = im.convert("RGB")
    assert worker_view.size == size
    return key, stored, worker_view


def encoded(im: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def gradient(mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (48, 1)), np.tile(x[:48, None], (1, 64)), np.full((48, 64), 90, np.uint8)], -1)
    return Image.fromarray(rgb, "RGB").convert(mode)


def test_a_plain_jpeg_is_stored_as_it_came(tmp_path: Path) -> None:
    data = encoded(gradient(), "JPEG", quality=90)
    key, stored, _ = store(tmp_path, data)
    assert key == "inputs/t/image.jpg" and stored == data


def test_a_png_with_alpha_is_flattened_into_a_new_png(tmp_path: Path) -> None:
    rgba = gradient("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0))  # fully transparent: the background colour must show
    data = encoded(rgba, "PNG")
    key, stored, view = store(tmp_path, data)
    assert key == "inputs/t/image.png" and stored != data
    assert len(set(view.getdata())) == 1  # one flat background colour, not the gradient under the alpha


def test_an_exif_rotated_jpeg_is_stored_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = encoded(gradient(), "JPEG", quality=90, exif=exif.tobytes())
    key, stored, view = store(tmp_path, data)
    assert key == "inputs/t/image.png" and stored != data
    assert view.size == (48, 64)  # the worker sees the displayed orientation


def test_an_upload_reference_counts_as_a_use_and_a_swept_one_is_a_clear_error(tmp_path: Path) -> None:
    from wanflash.errors import InvalidRequest
    from wanflash.jobs.service import JobService
    from wanflash.jobs.store import SqliteJobSource

    db = SqliteJobSource(tmp_path / "db.sqlite", outbox=no_webhooks)
    storage = LocalStore(tmp_path / "media")
    resolver = InputResolver(make_settings(tmp_path).limits, JobService(db), storage)
    png = encoded(gradient(), "PNG")
    storage.put_bytes("uploads/u.png", png)
    db.add_upload("0b0c7f3e-5a3e-4d8e-9a57-0c1f6a0b9e11", "image", "uploads/u.png", "image/png", now=0)
    ref = "0b0c7f3e-5a3e-4d8e-9a57-0c1f6a0b9e11"

    assert asyncio.run(resolver._bytes(ref, WHERE)) == png
    assert db.uploads_due(1000) == []  # used just now: its 30 days start again

    storage.delete("uploads/u.png")  # swept between the lookup and the read
    with pytest.raises(InvalidRequest) as caught:
        asyncio.run(resolver._bytes(ref, WHERE))
    (err,) = caught.value.errors
    assert err.parameter == WHERE.parameter and "No uploaded image or media" in err.message
    db.close()


def _router(tmp_path: Path, submit_error: Exception | None) -> tuple[object, LocalStore]:
    """A TaskRouter over real inputs storage and a job service whose submit fails with ``submit_error``."""
    from wanflash.api.fleet import Fleet
    from wanflash.api.tasks import TaskRouter
    from wanflash.worker.supervisor import capabilities_for

    class Jobs:
        async def in_flight(self, key_hash: str) -> int:
            return 0

        async def exists(self, task_uuid: str) -> bool:
            return False

        async def submit(self, spec: object, **kw: object) -> None:
            if submit_error is not None:
                raise submit_error

        async def workers(self) -> list[object]:
            return []  # no worker published: the Fleet plans with its own (tiny) capabilities

    settings = make_settings(tmp_path)
    storage = LocalStore(tmp_path / "media")
    jobs = Jobs()
    fleet = Fleet(jobs, own=capabilities_for(settings))  # type: ignore[arg-type]
    router = TaskRouter(settings, jobs, InputResolver(settings.limits, jobs, storage), None, fleet)  # type: ignore[arg-type]
    return router, storage


def _i2v(audio: str | None = None) -> dict[str, object]:
    import uuid

    png = base64.b64encode(encoded(gradient(), "PNG")).decode()
    inputs: dict[str, object] = {"frameImages": [{"image": png}]}
    if audio is not None:
        inputs["audio"] = audio
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "alibaba:wan@2.6-flash",
            "positivePrompt": "p", "resolution": "720p", "duration": 2, "inputs": inputs}


def test_a_refused_submit_leaves_no_inputs_behind(tmp_path: Path) -> None:
    from wanflash.errors import InvalidRequest, RunwareError, ServiceOverloaded

    def stored(storage: LocalStore, task: dict[str, object]) -> list[Path]:
        return sorted((storage.root / "inputs" / str(task["taskUUID"])).glob("*"))

    # Refused at the insert (the key's in-flight cap, lost in a race): the stored image is removed.
    router, storage = _router(tmp_path / "a", ServiceOverloaded("cap", retry_after=1.0))
    task = _i2v()
    reply = asyncio.run(router.handle(task, "http://h", "k"))  # type: ignore[attr-defined]
    assert reply.status == 429 and stored(storage, task) == []
    # A bad audio track after a good image: the image is removed too.
    router, storage = _router(tmp_path / "b", None)
    task = _i2v(audio=base64.b64encode(b"not audio at all" * 8).decode())
    reply = asyncio.run(router.handle(task, "http://h", "k"))  # type: ignore[attr-defined]
    assert reply.errors[0]["parameter"] == "inputs.audio" and stored(storage, task) == []
    # A conflict lost to another API process: the inputs under that taskUUID are the winner's.
    conflict = InvalidRequest([RunwareError("conflictTaskUUID", "taken", "taskUUID", "videoInference", "t")])
    router, storage = _router(tmp_path / "c", conflict)
    task = _i2v()
    reply = asyncio.run(router.handle(task, "http://h", "k"))  # type: ignore[attr-defined]
    assert reply.errors[0]["code"] == "conflictTaskUUID" and len(stored(storage, task)) == 1
    # Accepted: the input stays for the worker.
    router, storage = _router(tmp_path / "d", None)
    task = _i2v()
    reply = asyncio.run(router.handle(task, "http://h", "k"))  # type: ignore[attr-defined]
    assert reply.data and len(stored(storage, task)) == 1


def test_large_images_are_stored_at_2048_on_the_long_side(tmp_path: Path) -> None:
    big = Image.fromarray((np.arange(2600 * 1300) % 253).astype(np.uint8).reshape(1300, 2600), "L")
    key, _, view = store(tmp_path, encoded(big, "PNG"))
    assert key == "inputs/t/image.png" and view.size == (2048, 1024)


def test_decodes_run_at_most_max_concurrent_decodes_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    settings = make_settings(tmp_path, max_concurrent_decodes=2)
    resolver = InputResolver(settings.limits, None, LocalStore(tmp_path / "media"))  # type: ignore[arg-type]
    lock, running, peak = threading.Lock(), [0], [0]
    real = resolver._decode_image

    def counted(data: bytes, where: _Where) -> tuple[bytes, str, tuple[int, int]]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        try:
            return real(data, where)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(resolver, "_decode_image", counted)
    ref = "data:image/png;base64," + base64.b64encode(encoded(gradient(), "PNG")).decode()

    async def burst() -> None:
        await asyncio.gather(*(resolver.store_image(ref, f"inputs/t{i}/image", WHERE) for i in range(8)))

    asyncio.run(burst())
    assert peak[0] == 2

"""Stored results are typed (:class:`OutputRecord`) and keep the JSON format rows have always had:
a row written before the model existed still polls, and a record round-trips to the same JSON."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.jobs.records import no_webhooks
from tests.jobs.test_store import spec
from wanflash.delivery.responses import poll_reply
from wanflash.jobs.model import dump_results, load_results
from wanflash.jobs.store import SqliteJobSource

# Exactly what the supervisor stored per result before OutputRecord (dict keys, in its order).
OLD_ROW = [
    {"videoUUID": "v0", "seed": 7, "key": "outputs/t/0.mp4", "format": "MP4", "width": 1280, "height": 720,
     "frames": 80, "fps": 16.0, "duration": 5.0, "audio": True, "bytes": 51234,
     "promptExtend": {"prompt": "A CAT, slow dolly-in", "shots": None, "backend": "openai", "extended": True,
                      "note": None},
     "NSFWContent": False},
    {"videoUUID": "v1", "seed": 8, "key": "outputs/t/1.mp4", "format": "MP4", "width": 1280, "height": 720,
     "frames": 80, "fps": 16.0, "duration": 5.0, "audio": True, "bytes": 50999},
]


def test_old_rows_read_and_round_trip_unchanged() -> None:
    records = load_results(json.dumps(OLD_ROW))
    assert records is not None
    first, second = records
    assert first.prompt_extend is not None and first.prompt_extend.extended and first.nsfw_content is False
    assert second.prompt_extend is None and second.nsfw_content is None and second.size_bytes == 50999
    assert json.loads(dump_results(records)) == OLD_ROW
    assert load_results(None) is None


def test_a_record_missing_a_field_is_refused() -> None:
    broken = [dict(OLD_ROW[0])]
    del broken[0]["key"]
    with pytest.raises(ValidationError):
        load_results(json.dumps(broken))


def test_a_task_stored_before_the_change_still_polls(tmp_path: Path) -> None:
    store = SqliteJobSource(tmp_path / "db", outbox=no_webhooks)
    s = spec().model_copy(update={"number_results": 2, "seeds": [7, 8]})
    store.insert(s, now=1000)
    store.claim("w", 30, now=1001)
    store.close()
    with sqlite3.connect(tmp_path / "db") as db:  # the row as the old code wrote it
        db.execute("UPDATE tasks SET state='succeeded', results=?, finished=2000 WHERE task_uuid=?",
                   (json.dumps(OLD_ROW), s.task_uuid))
    store = SqliteJobSource(tmp_path / "db", outbox=no_webhooks)
    rec = store.get(s.task_uuid)
    assert rec is not None
    items = poll_reply(rec, lambda key, exp: f"http://h/{key}", default_ttl=60).data
    assert [(i["videoUUID"], i["seed"], i["videoURL"]) for i in items] == [
        ("v0", 7, "http://h/outputs/t/0.mp4"), ("v1", 8, "http://h/outputs/t/1.mp4")]
    assert (items[0]["extendedPrompt"], items[0]["promptExtended"], items[0]["NSFWContent"]) == (
        "A CAT, slow dolly-in", True, False)
    assert "extendedPrompt" not in items[1] and "NSFWContent" not in items[1]
    store.close()

"""``/openapi.json``: valid OpenAPI 3.1, generated from the wire models, and true to the server:
the model page's examples validate against it, bad tasks do not, and real replies match the envelope."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.api.support import API_KEY, FAKE, make_settings
from wanflash.testing import LiveServer, live_server

EXAMPLES = Path(__file__).parent.parent / "sdk" / "model_page_examples.json"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    settings = make_settings(tmp_path_factory.mktemp("openapi") / "data", playground=True)
    with live_server(settings, pipeline_factory=FAKE) as s:
        doc = httpx.get(s.http_url + "/openapi.json").json()
        yield s, doc


def validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def test_document_is_valid_openapi_31(served: tuple[LiveServer, dict[str, Any]]) -> None:
    _, doc = served
    validate(doc)  # raises on an invalid document
    assert doc["openapi"].startswith("3.1")
    assert {"/v1", "/media/{key}", "/health", "/metrics", "/openapi.json", "/", "/playground/estimate"} <= set(
        doc["paths"])


def test_without_playground_its_paths_are_not_described(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "data", metrics=False), pipeline_factory=FAKE) as s:
        doc = httpx.get(s.http_url + "/openapi.json").json()
    validate(doc)
    assert "/" not in doc["paths"] and "/metrics" not in doc["paths"] and "/v1" in doc["paths"]


def test_request_schema_matches_the_validator(served: tuple[LiveServer, dict[str, Any]]) -> None:
    _, doc = served
    v = validator(doc, "VideoInferenceTask")
    examples = json.loads(EXAMPLES.read_text())
    for example in examples:
        v.validate(example)
    first = examples[0]
    shorthand = {**first, "inputs": {"frameImages": [first["inputs"]["frameImages"][0]["image"]]}}
    v.validate(shorthand)
    for bad in ({**first, "duration": 20}, {**first, "colour": "red"}, {**first, "outputFormat": "GIF"},
                {**first, "duration": "5"}, {k: x for k, x in first.items() if k != "positivePrompt"}):
        assert not v.is_valid(bad), bad


def test_real_replies_match_the_envelope(served: tuple[LiveServer, dict[str, Any]]) -> None:
    server, doc = served
    envelope = validator(doc, "Envelope")
    tu = str(uuid.uuid4())
    task = {"taskType": "videoInference", "taskUUID": tu, "model": "alibaba:wan@2.6-flash", "positivePrompt": "x",
            "resolution": "720p", "duration": 2, "includeCost": True}
    replies = [httpx.post(server.http_url + "/v1", json=[task], headers=AUTH).json()]
    for _ in range(200):
        r = httpx.post(server.http_url + "/v1", json=[{"taskType": "getResponse", "taskUUID": tu}], headers=AUTH)
        replies.append(r.json())
        if r.json()["data"][0].get("status") == "success":
            break
        time.sleep(0.05)
    replies.append(httpx.post(server.http_url + "/v1", json=[{**task, "duration": 99}], headers=AUTH).json())
    replies.append(httpx.post(server.http_url + "/v1", json=[{"taskType": "ping", "ping": True}], headers=AUTH).json())
    assert replies[-3]["data"][0]["status"] == "success" and replies[-2]["errors"]
    for reply in replies:
        envelope.validate(reply)
    est = httpx.post(server.http_url + "/playground/estimate", json={"task": task}).json()
    validator(doc, "Estimate").validate(est)

"""The output-format table is the one source: the wire literal, storage, the CLI, OpenAPI, the playground and the
encoder all read their formats, suffixes and MIME types from it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from wanflash.api.openapi import _document
from wanflash.cli import _parser
from wanflash.contract.protocol import VideoInferenceTask
from wanflash.formats import OUTPUT_FORMATS, OutputFormat
from wanflash.jobs.model import JobSpec
from wanflash.media import encode
from wanflash.storage.base import content_type_for


def test_wire_literal_and_job_spec_list_the_table() -> None:
    assert typing.get_args(OutputFormat) == tuple(OUTPUT_FORMATS)
    schema = VideoInferenceTask.model_json_schema()["properties"]["outputFormat"]
    enum = next(b["enum"] for b in schema["anyOf"] if "enum" in b)
    assert enum == list(OUTPUT_FORMATS)
    assert JobSpec.model_fields["output_format"].annotation is OutputFormat


@pytest.mark.parametrize("fmt", list(OUTPUT_FORMATS))
def test_every_consumer_agrees_with_the_row(fmt: str) -> None:
    row = OUTPUT_FORMATS[fmt]
    assert content_type_for(f"outputs/t/0{row.suffix}") == row.mime_type
    media = _document(False, False, False, "http://x")["paths"]["/media/{key}"]["get"]["responses"]["200"]["content"]
    assert row.mime_type in media
    fmt_action = next(a for a in _parser()._subparsers._group_actions[0].choices["generate"]._actions  # type: ignore[union-attr]
                      if a.dest == "format")
    assert fmt in fmt_action.choices and fmt.lower() in fmt_action.choices
    assert encode.crf_for(fmt, 20) == row.crf_at_min_quality and encode.crf_for(fmt, 99) == row.crf_at_max_quality


def test_playground_download_names_come_from_the_config() -> None:
    js = (Path(encode.__file__).parents[1] / "api" / "playground" / "playground.js").read_text()
    assert "state.config.formats[task.outputFormat]" in js and "EXTENSIONS" not in js


def test_no_second_mime_table() -> None:
    assert not hasattr(encode, "MIME_TYPES") and not hasattr(encode, "SUFFIXES")

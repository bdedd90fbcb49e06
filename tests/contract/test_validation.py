"""The videoInference contract: every rule of the model page, table-driven.

Each invalid case names the parameter the error must point at and the error code, so a
regression in either the rule or its message is caught.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract.specs import validate_video_task
from wanflash.contract.validation import (
    SIZES,
    ResolvedInputs,
    parse_video_task,
    pick_size,
    plan_job,
)
from wanflash.errors import InvalidRequest
from wanflash.pipelines.profiles import PROFILES

TINY = PROFILES["tiny"]
UUID = "d9eefe6d-dea6-4eeb-ad7c-43315038bccc"
SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "wan26-flash-model-page.md"


def base(**kw: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": UUID,
        "model": "alibaba:wan@2.6-flash",
        "positivePrompt": "a crane blinks in the rain",
        "resolution": "720p",
    }
    for k, v in kw.items():
        if v is _DROP:
            task.pop(k, None)
        else:
            task[k] = v
    return task


_DROP = object()


def errors_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidRequest) as exc:
        validate_video_task(task, profile=TINY)
    return [e.to_wire() for e in exc.value.errors]


def page_examples() -> list[dict[str, Any]]:
    text = SPEC.read_text()
    blocks = re.findall(r"\*\*Request\*\*:\s*```json\n(.*?)```", text, re.S)
    return [json.loads(b) for b in blocks]


# ---------------------------------------------------------------- valid requests

VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal resolution", base()),
    ("1080p resolution", base(resolution="1080p")),
    ("frame image only", base(resolution=_DROP, inputs={"frameImages": ["aac49721-1964-481a-ae78-8a4e29b91402"]})),
    ("frame object first", base(inputs={"frameImages": [{"image": "img", "frame": "first"}]})),
    ("frame object 0", base(inputs={"frameImages": [{"image": "img", "frame": 0}]})),
    ("frame object without frame", base(inputs={"frameImages": [{"image": "img"}]})),
    *[(f"size {w}x{h}", base(resolution=_DROP, width=w, height=h)) for cls in SIZES for (w, h) in SIZES[cls]],
    ("duration 2", base(duration=2)),
    ("duration 15", base(duration=15)),
    ("quality 20", base(outputQuality=20)),
    ("quality 99", base(outputQuality=99)),
    ("numberResults 4", base(numberResults=4)),
    ("seed 0", base(seed=0)),
    ("seed max", base(seed=2147483647)),
    ("ttl 60", base(ttl=60)),
    ("webm", base(outputFormat="WEBM")),
    ("mov", base(outputFormat="MOV")),
    ("outputType URL", base(outputType="URL")),
    ("deliveryMethod async", base(deliveryMethod="async")),
    ("includeCost", base(includeCost=True)),
    ("safety fast", base(safety={"checkContent": True, "mode": "fast"})),
    ("safety full", base(safety={"checkContent": True, "mode": "full"})),
    ("safety none", base(safety={"checkContent": False, "mode": "none"})),
    ("shotType multi with promptExtend", base(providerSettings={"alibaba": {"promptExtend": True, "shotType": "multi"}})),
    ("shotType multi, promptExtend default", base(providerSettings={"alibaba": {"shotType": "multi"}})),
    ("audio input with audio true", base(inputs={"audio": "https://example.com/a.mp3"},
                                         providerSettings={"alibaba": {"audio": True}})),
    ("audio input alone", base(inputs={"audio": "0b8e5e0e-1111-4222-8333-444455556666"})),
    ("negative prompt 500", base(negativePrompt="n" * 500)),
    ("positive prompt 1500", base(positivePrompt="p" * 1500)),
    ("webhook", base(webhookURL="https://example.com/hook?token=1")),
    ("uploadEndpoint", base(uploadEndpoint="https://bucket.s3.amazonaws.com/x.mp4?X-Amz-Signature=a")),
    ("nulls are absent", base(seed=None, negativePrompt=None)),
]


@pytest.mark.parametrize("task", [t for _, t in VALID], ids=[n for n, _ in VALID])
def test_valid(task: dict[str, Any]) -> None:
    spec = validate_video_task(task, profile=TINY)
    assert spec.task_uuid == UUID
    assert (spec.width, spec.height) in [wh for whs in SIZES.values() for wh in whs]


@pytest.mark.parametrize("index", range(4))
def test_page_examples_accepted_as_written(index: int) -> None:
    examples = page_examples()
    assert len(examples) == 4
    task = examples[index]
    spec = validate_video_task(task, profile=TINY)
    assert spec.seeds == [task["seed"]]
    assert (spec.width, spec.height) == (task["width"], task["height"])
    assert spec.duration == task["duration"]


# ---------------------------------------------------------------- invalid requests

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (name, task, parameter, code)
    ("missing prompt", base(positivePrompt=_DROP), "positivePrompt", "missingPositivePrompt"),
    ("empty prompt", base(positivePrompt=""), "positivePrompt", "invalidPositivePrompt"),
    ("prompt 1501", base(positivePrompt="p" * 1501), "positivePrompt", "invalidPositivePrompt"),
    ("prompt not string", base(positivePrompt=5), "positivePrompt", "invalidPositivePrompt"),
    ("negative empty", base(negativePrompt=""), "negativePrompt", "invalidNegativePrompt"),
    ("negative 501", base(negativePrompt="n" * 501), "negativePrompt", "invalidNegativePrompt"),
    ("duration 1", base(duration=1), "duration", "invalidDuration"),
    ("duration 16", base(duration=16), "duration", "invalidDuration"),
    ("duration string", base(duration="5"), "duration", "invalidDuration"),
    ("duration float", base(duration=5.5), "duration", "invalidDuration"),
    ("duration bool", base(duration=True), "duration", "invalidDuration"),
    ("quality 19", base(outputQuality=19), "outputQuality", "invalidOutputQuality"),
    ("quality 100", base(outputQuality=100), "outputQuality", "invalidOutputQuality"),
    ("numberResults 0", base(numberResults=0), "numberResults", "invalidNumberResults"),
    ("numberResults 5", base(numberResults=5), "numberResults", "invalidNumberResults"),
    ("seed -1", base(seed=-1), "seed", "invalidSeed"),
    ("seed 2^31", base(seed=2147483648), "seed", "invalidSeed"),
    ("ttl 59", base(ttl=59), "ttl", "invalidTtl"),
    ("ttl over 7 days", base(ttl=604801), "ttl", "invalidTtl"),
    ("outputType base64", base(outputType="base64Data"), "outputType", "invalidOutputType"),
    ("outputFormat gif", base(outputFormat="GIF"), "outputFormat", "invalidOutputFormat"),
    ("outputFormat lowercase", base(outputFormat="mp4"), "outputFormat", "invalidOutputFormat"),
    ("deliveryMethod sync", base(deliveryMethod="sync"), "deliveryMethod", "invalidDeliveryMethod"),
    ("resolution 480p", base(resolution="480p"), "resolution", "invalidResolution"),
    ("shotType triple", base(providerSettings={"alibaba": {"shotType": "triple"}}),
     "providerSettings.alibaba.shotType", "invalidShotType"),
    ("safety mode slow", base(safety={"mode": "slow"}), "safety.mode", "invalidSafetyMode"),
    ("safety checkContent string", base(safety={"checkContent": "yes"}), "safety.checkContent",
     "invalidSafetyCheckContent"),
    ("safety mode without check", base(safety={"checkContent": False, "mode": "fast"}), "safety.mode",
     "conflictSafety"),
    ("taskUUID v1", base(taskUUID="6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "taskUUID", "invalidTaskUUID"),
    ("taskUUID junk", base(taskUUID="not-a-uuid"), "taskUUID", "invalidTaskUUID"),
    ("taskUUID missing", base(taskUUID=_DROP), "taskUUID", "missingTaskUUID"),
    ("model wrong", base(model="alibaba:wan@2.6"), "model", "invalidModel"),
    ("model case", base(model="Alibaba:wan@2.6-flash"), "model", "invalidModel"),
    ("model missing", base(model=_DROP), "model", "missingModel"),
    ("taskType wrong", base(taskType="imageInference"), "taskType", "invalidTaskType"),
    ("width alone", base(resolution=_DROP, width=1280), "height", "missingHeight"),
    ("height alone", base(resolution=_DROP, height=720), "width", "missingWidth"),
    ("unlisted size", base(resolution=_DROP, width=1280, height=704), "width", "invalidDimensions"),
    ("swapped odd size", base(resolution=_DROP, width=1088, height=1088), "width", "invalidDimensions"),
    ("resolution with size", base(width=1280, height=720), "resolution", "conflictResolutionWidthHeight"),
    ("no dimensions", base(resolution=_DROP), "resolution", "missingDimensions"),
    ("two frame images", base(inputs={"frameImages": ["a", "b"]}), "inputs.frameImages", "invalidFrameImages"),
    ("empty frame images", base(resolution=_DROP, inputs={"frameImages": []}), "inputs.frameImages",
     "invalidFrameImages"),
    ("frame last", base(inputs={"frameImages": [{"image": "a", "frame": "last"}]}),
     "inputs.frameImages[0].frame", "invalidFrame"),
    ("frame 5", base(inputs={"frameImages": [{"image": "a", "frame": 5}]}),
     "inputs.frameImages[0].frame", "invalidFrame"),
    ("frame false", base(inputs={"frameImages": [{"image": "a", "frame": False}]}),
     "inputs.frameImages[0].frame", "invalidFrame"),
    ("frame object without image", base(inputs={"frameImages": [{"frame": "first"}]}),
     "inputs.frameImages[0].image", "missingImage"),
    ("frame image number", base(inputs={"frameImages": [7]}), "inputs.frameImages[0]", "invalidFrameImages"),
    ("frameImages not list", base(inputs={"frameImages": "abc"}), "inputs.frameImages", "invalidFrameImages"),
    ("multi without promptExtend", base(providerSettings={"alibaba": {"promptExtend": False, "shotType": "multi"}}),
     "providerSettings.alibaba.shotType", "conflictShotTypePromptExtend"),
    ("audio input with audio false", base(inputs={"audio": "https://example.com/a.mp3"},
                                          providerSettings={"alibaba": {"audio": False}}),
     "providerSettings.alibaba.audio", "conflictAudio"),
    ("audio flag not bool", base(providerSettings={"alibaba": {"audio": "yes"}}),
     "providerSettings.alibaba.audio", "invalidAudio"),
    ("promptExtend not bool", base(providerSettings={"alibaba": {"promptExtend": 1}}),
     "providerSettings.alibaba.promptExtend", "invalidPromptExtend"),
    ("empty audio input", base(inputs={"audio": ""}), "inputs.audio", "invalidAudio"),
    ("unknown top-level field", base(cfgScale=7), "cfgScale", "unsupportedParameter"),
    ("unknown inputs field", base(inputs={"referenceImages": ["a"]}), "inputs.referenceImages",
     "unsupportedParameter"),
    ("unknown provider", base(providerSettings={"openai": {}}), "providerSettings.openai", "unsupportedParameter"),
    ("unknown alibaba field", base(providerSettings={"alibaba": {"style": "x"}}),
     "providerSettings.alibaba.style", "unsupportedParameter"),
    ("unknown frame field", base(inputs={"frameImages": [{"image": "a", "weight": 1}]}),
     "inputs.frameImages[0].weight", "unsupportedParameter"),
    ("unknown safety field", base(safety={"level": 2}), "safety.level", "unsupportedParameter"),
    ("webhook not http", base(webhookURL="ftp://example.com/x"), "webhookURL", "invalidWebhookURL"),
    ("uploadEndpoint not http", base(uploadEndpoint="file:///etc/passwd"), "uploadEndpoint",
     "invalidUploadEndpoint"),
    ("includeCost string", base(includeCost="true"), "includeCost", "invalidIncludeCost"),
    ("width string", base(resolution=_DROP, width="1280", height=720), "width", "invalidWidth"),
    ("inputs not object", base(inputs=["a"]), "inputs", "invalidInputs"),
]


@pytest.mark.parametrize(
    "task,parameter,code", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(task: dict[str, Any], parameter: str, code: str) -> None:
    errors = errors_of(task)
    matching = [e for e in errors if e["parameter"] == parameter]
    assert matching, f"no error names {parameter!r}: {errors}"
    assert matching[0]["code"] == code
    for e in errors:
        assert e["taskType"] == "videoInference"
        assert set(e) >= {"code", "message", "parameter", "taskType"}
        assert parameter.split(".")[-1].split("[")[0] in e["message"] or e["parameter"] != parameter


def test_errors_carry_task_uuid_when_it_is_a_string() -> None:
    errors = errors_of(base(duration=99))
    assert errors[0]["taskUUID"] == UUID


def test_several_cross_field_errors_reported_together() -> None:
    errors = errors_of(base(model="x", width=1280, height=720,
                            providerSettings={"alibaba": {"promptExtend": False, "shotType": "multi"}}))
    assert {e["code"] for e in errors} >= {"invalidModel", "conflictResolutionWidthHeight",
                                          "conflictShotTypePromptExtend"}


def test_case_count() -> None:
    # The issue asks for at least 60 table-driven cases.
    assert len(VALID) + len(INVALID) >= 60


# ---------------------------------------------------------------- defaults and planning

def test_defaults_follow_the_page() -> None:
    spec = validate_video_task(base(), profile=TINY)
    assert spec.output_format == "MP4"
    assert spec.output_quality == 95
    assert spec.duration == 5
    assert spec.number_results == 1
    assert spec.audio is True
    assert spec.prompt_extend is True
    assert spec.shot_type == "single"
    assert spec.output_type == "URL"
    assert spec.delivery_method == "async"
    assert spec.include_cost is False
    assert spec.safety_mode == "none" and spec.safety_check is False


def test_random_seed_is_drawn_and_flagged() -> None:
    task = parse_video_task(base(numberResults=3))
    spec = plan_job(task, profile=TINY, draw_seed=lambda: 2147483646)
    assert spec.seed_was_random
    assert spec.seeds == [2147483646, 2147483647, 0]  # distinct and within the accepted seed range


def test_given_seed_gives_distinct_seeds_per_result() -> None:
    spec = validate_video_task(base(seed=7, numberResults=4), profile=TINY)
    assert spec.seeds == [7, 8, 9, 10] and not spec.seed_was_random


def test_check_content_defaults_to_fast() -> None:
    assert validate_video_task(base(safety={"checkContent": True}), profile=TINY).safety_mode == "fast"


@pytest.mark.parametrize(
    "image_size,resolution,expected",
    [
        (None, "720p", (1280, 720)),
        (None, "1080p", (1920, 1080)),
        ((1920, 1080), "720p", (1280, 720)),
        ((1080, 1920), "720p", (720, 1280)),
        ((1000, 1000), "1080p", (1440, 1440)),
        ((1024, 768), "720p", (1088, 832)),
        ((768, 1024), "1080p", (1248, 1632)),
        ((3000, 1000), "720p", (1280, 720)),
        ((900, 1000), "720p", (960, 960)),
    ],
)
def test_resolution_picks_closest_aspect(image_size, resolution, expected) -> None:  # type: ignore[no-untyped-def]
    assert pick_size(resolution, image_size) == expected
    task = parse_video_task(base(resolution=resolution, inputs={"frameImages": ["img"]}))
    spec = plan_job(task, profile=TINY, inputs=ResolvedInputs(image_key="k", image_size=image_size))
    assert (spec.width, spec.height) == expected


def test_frame_image_alone_defaults_to_720p_matching_aspect() -> None:
    task = parse_video_task(base(resolution=_DROP, inputs={"frameImages": ["img"]}))
    spec = plan_job(task, profile=TINY, inputs=ResolvedInputs(image_key="k", image_size=(600, 800)))
    assert (spec.width, spec.height) == (832, 1088)
    assert spec.mode == "i2v"


def test_audio_input_sets_duration_from_track_clamped() -> None:
    for seconds, expected in [(7.4, 7), (0.5, 2), (40.0, 15), (12.6, 13)]:
        task = parse_video_task(base(inputs={"audio": "a"}))
        spec = plan_job(task, profile=TINY, inputs=ResolvedInputs(audio_key="a", audio_seconds=seconds))
        assert spec.duration == expected
        assert spec.audio is True
    # An explicit duration wins over the track's length.
    task = parse_video_task(base(duration=4, inputs={"audio": "a"}))
    assert plan_job(task, profile=TINY, inputs=ResolvedInputs(audio_key="a", audio_seconds=9.0)).duration == 4


def test_server_without_audio_model_refuses_generated_audio() -> None:
    """WANFLASH_AUDIO_MODEL=none: sound that would have to be generated is refused, not billed."""
    for task in (base(), base(providerSettings={"alibaba": {"audio": True}})):
        with pytest.raises(InvalidRequest) as ei:
            parse_video_task(task, native_audio=False)
        (e,) = ei.value.errors
        assert (e.code, e.parameter) == ("unsupportedAudio", "providerSettings.alibaba.audio")
    silent = parse_video_task(base(providerSettings={"alibaba": {"audio": False}}), native_audio=False)
    assert plan_job(silent, profile=TINY).audio is False
    # A supplied track needs no model: it is muxed as the soundtrack and billed at the audio rate.
    track = parse_video_task(base(inputs={"audio": "a"}), native_audio=False)
    assert plan_job(track, profile=TINY, inputs=ResolvedInputs(audio_key="a", audio_seconds=3.0)).audio is True


@pytest.mark.parametrize("profile_name", list(PROFILES))
@pytest.mark.parametrize("duration", [2, 5, 7, 15])
def test_frames_last_the_requested_seconds(profile_name: str, duration: int) -> None:
    profile = PROFILES[profile_name]
    task = parse_video_task(base(duration=duration))
    spec = plan_job(task, profile=profile)
    assert spec.fps == profile.fps
    assert spec.num_frames == duration * profile.fps
    assert spec.num_frames / spec.fps == duration


def test_jobspec_is_plain_json_without_inline_media() -> None:
    task = parse_video_task(base(inputs={"frameImages": ["data:image/png;base64,AAAA"]}))
    spec = plan_job(task, profile=TINY, inputs=ResolvedInputs(image_key="inputs/x.png", image_size=(8, 8)))
    dumped = spec.model_dump_json()
    assert "base64" not in dumped
    assert json.loads(dumped)["image_key"] == "inputs/x.png"
    assert type(spec).model_validate_json(dumped) == spec


def test_parse_does_not_mutate_input() -> None:
    task = base(inputs={"frameImages": ["a"]})
    before = copy.deepcopy(task)
    validate_video_task(task, profile=TINY)
    assert task == before

"""Shot plans: normalisation, the fallback plan, the exact frame split, and reply parsing."""

from __future__ import annotations

import itertools
import random

import pytest

from wanflash.pipelines.shots import (
    Shot,
    ShotPlanError,
    apportion,
    fallback_shot_plan,
    parse_shot_plan_text,
    shot_frame_counts,
    shot_plan_problems,
    validate_shot_plan,
)

DURATIONS = range(2, 16)
FPS = (16, 24)


@pytest.mark.parametrize("duration", DURATIONS)
def test_fallback_plan_is_valid_and_even(duration: int) -> None:
    plan = fallback_shot_plan("a cat walks", duration)
    assert shot_plan_problems(plan, duration) == []
    assert all(s.prompt == "a cat walks" and s.transition == "continue" for s in plan)
    secs = [s.duration for s in plan]
    assert max(secs) - min(secs) <= 1  # as even as whole seconds allow
    assert max(secs) <= 5  # each shot fits one ordinary Wan clip
    assert fallback_shot_plan("a cat walks", duration) == plan  # deterministic


def test_duration_two_gives_two_one_second_shots() -> None:
    assert [s.duration for s in fallback_shot_plan("p", 2)] == [1.0, 1.0]
    plan = validate_shot_plan([{"duration": 5, "prompt": "a"}, {"duration": 9, "prompt": "b"}, {"prompt": "c"}], 2)
    assert [s.duration for s in plan] == [1.0, 1.0]
    assert [s.prompt for s in plan] == ["a", "b"]


@pytest.mark.parametrize("duration", [0, 1, -3, 2.5, True])
def test_too_short_or_fractional_duration_is_an_error(duration: object) -> None:
    with pytest.raises(ShotPlanError):
        fallback_shot_plan("p", duration)  # type: ignore[arg-type]


def _random_raw_plan(rng: random.Random) -> list[object]:
    shots: list[object] = []
    for _ in range(rng.randint(0, 8)):
        dur = rng.choice([rng.randint(-3, 12), rng.uniform(-1, 9), None, "3s", "x", float("nan"), True])
        prompt = rng.choice(["walk", "run", "", "   ", None, "turn {left}"])
        trans = rng.choice(["continue", "cut", "hard cut", "CUT", "fade", None, 3])
        item = {"duration": dur, "prompt": prompt, "transition": trans}
        shots.append(rng.choice([item, item, item, "not a shot", 7]))
    return shots


@pytest.mark.parametrize("duration", DURATIONS)
def test_validate_any_raw_plan_gives_valid_plan_or_error(duration: int) -> None:
    rng = random.Random(duration)
    valid = 0
    for _ in range(200):
        raw = _random_raw_plan(rng)
        try:
            plan = validate_shot_plan(raw, duration)
        except ShotPlanError:
            usable = [s for s in raw if isinstance(s, dict) and isinstance(s["prompt"], str) and s["prompt"].strip()]
            assert len(usable) < 2
            continue
        valid += 1
        assert shot_plan_problems(plan, duration) == [], raw
        assert plan[0].transition == "continue"
        assert len(plan) <= min(5, duration)
        for fps in FPS:
            counts = shot_frame_counts(plan, fps, duration * fps)
            assert sum(counts) == duration * fps and min(counts) >= 1
    assert valid > 20  # the generator must exercise the repair path, not only errors


def test_validate_keeps_a_good_plan_unchanged() -> None:
    good = [Shot(3, "a", "continue"), Shot(2, "b", "cut"), Shot(5, "c", "continue")]
    notes: list[str] = []
    plan = validate_shot_plan(good, 10, notes=notes)
    assert plan == [Shot(3.0, "a", "continue"), Shot(2.0, "b", "cut"), Shot(5.0, "c", "continue")]
    assert notes == []


def test_validate_repairs_and_reports() -> None:
    raw = [{"duration": -2, "prompt": "a", "transition": "cut"}] + [
        {"duration": 4, "prompt": f"s{i}", "transition": "hard cut"} for i in range(6)
    ]
    notes: list[str] = []
    plan = validate_shot_plan(raw, 10, notes=notes)
    assert shot_plan_problems(plan, 10) == []
    assert len(plan) == 5 and plan[0].prompt == "a" and plan[0].transition == "continue"
    assert all(s.transition == "cut" for s in plan[1:])
    assert any("cut to 5" in n for n in notes) and any("rescaled" in n for n in notes)
    assert any("first shot" in n for n in notes) and any("filled" in n for n in notes)


def test_rescaling_keeps_proportions() -> None:
    plan = validate_shot_plan([{"duration": 2, "prompt": "a"}, {"duration": 6, "prompt": "b"}], 4)
    assert [s.duration for s in plan] == [1.0, 3.0]


@pytest.mark.parametrize("duration", DURATIONS)
@pytest.mark.parametrize("fps", FPS)
def test_frame_counts_exact_for_every_split(duration: int, fps: int) -> None:
    # every whole-second split of `duration` into 2-5 shots
    for n in range(2, min(5, duration) + 1):
        for cuts in itertools.combinations(range(1, duration), n - 1):
            bounds = (0, *cuts, duration)
            shots = [Shot(b - a, "p") for a, b in itertools.pairwise(bounds)]
            counts = shot_frame_counts(shots, fps, duration * fps)
            assert counts == [int(s.duration) * fps for s in shots]  # whole seconds: exact
            # a 4k+1 frame grid (one more frame) still sums exactly
            odd = shot_frame_counts(shots, fps, duration * fps + 1)
            assert sum(odd) == duration * fps + 1 and min(odd) >= 1
            assert all(abs(o - c) <= 1 for o, c in zip(odd, counts, strict=True))


def test_frame_counts_rejects_mismatched_plans() -> None:
    plan = fallback_shot_plan("p", 5)
    with pytest.raises(ValueError):
        shot_frame_counts(plan, 16, 10 * 16)  # a plan for another duration
    with pytest.raises(ValueError):
        shot_frame_counts([], 16, 80)
    with pytest.raises(ValueError):
        shot_frame_counts(plan, 0, 80)
    with pytest.raises(ValueError):
        shot_frame_counts(plan, 1, 1)  # fewer frames than shots


def test_apportion_properties() -> None:
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 6)
        weights = [rng.uniform(0.01, 10) for _ in range(n)]
        total = rng.randint(n, 400)
        parts = apportion(weights, total)
        assert sum(parts) == total and min(parts) >= 1
    with pytest.raises(ValueError):
        apportion([1, 1, 1], 2)


@pytest.mark.parametrize(
    "reply",
    [
        '{"shots": [{"duration": 2, "prompt": "a"}, {"duration": 3, "prompt": "b"}]}',
        'Sure! Here is the plan:\n```json\n{"shots": [{"duration": 2, "prompt": "a"}, {"duration": 3, "prompt": "b"}]}\n```\nEnjoy.',
        'Plan {draft} follows: {"shots": [{"duration": 2, "prompt": "a"}, {"duration": 3, "prompt": "b"}]} -- done',
        '[{"duration": 2, "prompt": "a"}, {"duration": 3, "prompt": "b"}]',
    ],
)
def test_parse_finds_the_shot_list(reply: str) -> None:
    shots = parse_shot_plan_text(reply)
    assert [s["prompt"] for s in shots] == ["a", "b"]


def test_parse_handles_braces_inside_strings() -> None:
    shots = parse_shot_plan_text('{"shots": [{"duration": 1, "prompt": "a } tricky { one"}]}')
    assert shots[0]["prompt"] == "a } tricky { one"


@pytest.mark.parametrize("reply", ["", "no json here", "{not json}", '{"plan": []}', "[1, 2]", "{" * 5000])
def test_parse_rejects_replies_without_a_plan(reply: str) -> None:
    with pytest.raises(ShotPlanError):
        parse_shot_plan_text(reply)

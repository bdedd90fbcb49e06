"""Multi-shot plans: the shot list, its normalisation, and the per-shot frame split.

``shotType: "multi"`` turns one request into 2-5 shots. Shot 1 starts from the input image;
each later shot either continues from the last frame of the shot before (``"continue"``) or
is a text-driven hard cut (``"cut"``). This module is pure data and arithmetic (no torch):

* :func:`validate_shot_plan` turns whatever an LLM returned into a valid plan or raises
  :class:`ShotPlanError`. A valid plan has 2-5 shots (at most one per second), whole-second
  durations of at least 1 s that sum exactly to the requested duration, non-empty prompts and
  a first shot that continues from the input.
* :func:`fallback_shot_plan` is the deterministic plan used when no LLM (or no usable answer)
  is available.
* :func:`shot_frame_counts` splits the output frame count between the shots, exactly.
* :func:`parse_shot_plan_text` finds the JSON shot list in an LLM reply (code fences, prose).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ShotTransition = Literal["continue", "cut"]

MIN_SHOTS = 2
MAX_SHOTS = 5
MIN_SHOT_SECONDS = 1
# Wan is trained on ~5 s clips (81 frames at 16 fps): the fallback plan keeps shots that long
# or shorter so each shot is one ordinary generation.
FALLBACK_SHOT_SECONDS = 5
MAX_SHOT_PROMPT_CHARS = 2000


class ShotPlanError(ValueError):
    """A shot list that cannot be repaired into a valid plan."""


@dataclass(frozen=True)
class Shot:
    """One shot: ``duration`` in seconds (whole seconds after normalisation)."""

    duration: float
    prompt: str
    transition: ShotTransition = "continue"

    def to_dict(self) -> dict[str, Any]:
        d: float | int = int(self.duration) if float(self.duration).is_integer() else self.duration
        return {"duration": d, "prompt": self.prompt, "transition": self.transition}


def max_shots_for(duration: int) -> int:
    """The most shots a ``duration``-second plan can hold (each shot at least 1 s)."""
    return max(0, min(MAX_SHOTS, int(duration) // MIN_SHOT_SECONDS))


def _check_duration(duration: int) -> int:
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not float(duration).is_integer():
        raise ShotPlanError(f"duration must be a whole number of seconds, got {duration!r}")
    d = int(duration)
    if d < MIN_SHOTS * MIN_SHOT_SECONDS:
        raise ShotPlanError(f"a multi-shot plan needs at least {MIN_SHOTS} s, got {d} s")
    return d


def apportion(weights: Sequence[float], total: int, minimum: int = 1) -> list[int]:
    """Split ``total`` into integers >= ``minimum`` proportional to ``weights``, summing exactly.

    Largest-remainder rounding with ties broken by position, so the result is deterministic.
    """
    n = len(weights)
    if n == 0:
        raise ValueError("nothing to apportion")
    if total < n * minimum:
        raise ValueError(f"cannot give {n} parts at least {minimum} each out of {total}")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise ValueError("weights must be positive and finite")
    wsum = float(sum(weights))
    targets = [w / wsum * total for w in weights]
    parts = [max(minimum, math.floor(t)) for t in targets]
    # Too little: grow the parts furthest below their target. Too much (the minimum lifted
    # some parts): shrink the parts furthest above their target that can still shrink.
    while sum(parts) < total:
        i = max(range(n), key=lambda k: (targets[k] - parts[k], -k))
        parts[i] += 1
    while sum(parts) > total:
        i = min((k for k in range(n) if parts[k] > minimum), key=lambda k: (targets[k] - parts[k], k))
        parts[i] -= 1
    return parts


def _coerce_duration(value: Any) -> float | None:
    """A usable positive duration, or None when missing / not a number / not positive."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = re.search(r"[-+]?\d+(?:\.\d+)?", value)  # "3s", "3 seconds"
        if not m:
            return None
        value = m.group(0)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _coerce_transition(value: Any) -> ShotTransition:
    # Anything that mentions a cut is a cut; everything else continues from the last frame,
    # the safer choice visually.
    return "cut" if isinstance(value, str) and "cut" in value.lower() else "continue"


def _items(shots: Iterable[Shot | Mapping[str, Any]]) -> list[tuple[float | None, str, ShotTransition]]:
    out: list[tuple[float | None, str, ShotTransition]] = []
    for s in shots:
        if isinstance(s, Shot):
            dur, prompt, trans = s.duration, s.prompt, s.transition
        elif isinstance(s, Mapping):
            dur = s.get("duration", s.get("seconds"))
            prompt = s.get("prompt", s.get("description", ""))
            trans = s.get("transition", "continue")
        else:
            continue  # a bare string or number in the list: not a shot
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        out.append((_coerce_duration(dur), prompt.strip()[:MAX_SHOT_PROMPT_CHARS], _coerce_transition(trans)))
    return out


def validate_shot_plan(
    shots: Iterable[Shot | Mapping[str, Any]], duration: int, *, notes: list[str] | None = None
) -> list[Shot]:
    """Normalise ``shots`` into a valid plan for ``duration`` seconds, or raise ShotPlanError.

    Repairs: shots without a prompt are dropped; more than the allowed number of shots are
    cut to the first ones; missing or non-positive durations get an equal share; durations
    are rescaled and rounded to whole seconds (>= 1 s) summing exactly to ``duration``; the
    first shot's transition becomes ``"continue"``. Fewer than two usable shots is an error.
    Each repair is described in ``notes`` when a list is given.
    """
    total = _check_duration(duration)
    items = _items(shots)
    if len(items) < MIN_SHOTS:
        raise ShotPlanError(f"{len(items)} usable shot(s); a multi-shot plan needs {MIN_SHOTS} to {MAX_SHOTS}")
    note = notes.append if notes is not None else (lambda _msg: None)
    limit = max_shots_for(total)
    if len(items) > limit:
        note(f"{len(items)} shots cut to {limit}")
        items = items[:limit]
    known = [d for d, _, _ in items if d is not None]
    if len(known) < len(items):
        note("missing or non-positive durations filled in")
    fill = (total - sum(known)) / (len(items) - len(known)) if len(known) < len(items) else 0.0
    if fill <= 0:  # the known shots already use up the time: give the rest an average share
        fill = (sum(known) / len(known)) if known else 1.0
    weights = [d if d is not None else fill for d, _, _ in items]
    seconds = apportion(weights, total, MIN_SHOT_SECONDS)
    if [float(w) for w in weights] != [float(s) for s in seconds]:
        note(f"durations rescaled to sum to {total} s")
    if items[0][2] != "continue":
        note("first shot set to continue from the input")
    return [
        Shot(duration=float(sec), prompt=prompt, transition="continue" if i == 0 else trans)
        for i, (sec, (_, prompt, trans)) in enumerate(zip(seconds, items, strict=True))
    ]


def shot_plan_problems(shots: Sequence[Shot], duration: int) -> list[str]:
    """Everything wrong with an already-built plan (empty when it is valid). Strict: no repair."""
    problems: list[str] = []
    if not MIN_SHOTS <= len(shots) <= MAX_SHOTS:
        problems.append(f"{len(shots)} shots, need {MIN_SHOTS}-{MAX_SHOTS}")
    for i, s in enumerate(shots):
        if not float(s.duration).is_integer() or s.duration < MIN_SHOT_SECONDS:
            problems.append(f"shot {i + 1}: duration {s.duration} is not a whole number >= {MIN_SHOT_SECONDS} s")
        if s.transition not in ("continue", "cut"):
            problems.append(f"shot {i + 1}: transition {s.transition!r}")
    if shots and shots[0].transition != "continue":
        problems.append("shot 1 must continue from the input")
    if sum(s.duration for s in shots) != duration:
        problems.append(f"durations sum to {sum(s.duration for s in shots)} s, not {duration} s")
    return problems


def fallback_shot_plan(prompt: str, duration: int) -> list[Shot]:
    """The deterministic plan: ceil(duration / 5) shots (2-5), as even as whole seconds allow,
    each reusing ``prompt`` and continuing from the previous shot's last frame."""
    total = _check_duration(duration)
    n = min(max_shots_for(total), max(MIN_SHOTS, math.ceil(total / FALLBACK_SHOT_SECONDS)))
    seconds = apportion([1.0] * n, total, MIN_SHOT_SECONDS)
    return [Shot(duration=float(s), prompt=prompt, transition="continue") for s in seconds]


def shot_frame_counts(shots: Sequence[Shot], fps: int, total_frames: int) -> list[int]:
    """Frames per shot, proportional to the shot durations, each >= 1, summing to ``total_frames``.

    Boundaries are placed at the rounded cumulative times, so a shot's frames line up with its
    seconds when ``total_frames == duration * fps``. A frame count more than one second away
    from the plan's duration means the plan belongs to another request: ValueError.
    """
    if not shots:
        raise ValueError("no shots")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if total_frames < len(shots):
        raise ValueError(f"{total_frames} frames cannot hold {len(shots)} shots")
    seconds = [float(s.duration) for s in shots]
    if any(not math.isfinite(d) or d <= 0 for d in seconds):
        raise ValueError("shot durations must be positive")
    plan_seconds = sum(seconds)
    if abs(plan_seconds * fps - total_frames) > fps:
        raise ValueError(f"{total_frames} frames at {fps} fps do not match a {plan_seconds:g} s plan")
    return apportion(seconds, total_frames, 1)


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


MAX_REPLY_CHARS = 32_000


def _json_candidates(text: str) -> Iterator[str]:
    """Substrings that may hold the JSON answer, lazily: fenced blocks first, then balanced
    {...} or [...] spans (scanned with string awareness so braces inside prompts don't count)."""
    text = text[:MAX_REPLY_CHARS]  # bounded work whatever the backend sends
    for m in _FENCE.finditer(text):
        yield m.group(1)
    tried = 0
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        stack: list[str] = []
        in_str = esc = False
        for j in range(start, len(text)):
            c = text[j]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if not stack or stack.pop() != c:
                    break
                if not stack:
                    yield text[start : j + 1]
                    break
        tried += 1
        if tried >= 64:  # bounded work on long, brace-heavy replies
            return


def parse_shot_plan_text(text: str) -> list[Any]:
    """The shot list from an LLM reply: ``{"shots": [...]}`` or a bare ``[...]``, possibly in
    code fences or surrounded by prose. Raises ShotPlanError when there is none."""
    for cand in _json_candidates(text):
        try:
            data = json.loads(cand)
        except ValueError:
            continue
        if isinstance(data, Mapping):
            shots = data.get("shots")
            if isinstance(shots, list):
                return shots
        elif isinstance(data, list) and data and all(isinstance(x, Mapping) for x in data):
            return data
    raise ShotPlanError("no JSON shot list in the reply")

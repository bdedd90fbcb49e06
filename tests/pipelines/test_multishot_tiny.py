"""Multi-shot on the real engine (tiny model): every shot's prompt reaches the diffusers pipeline
that conditions it as planned (image-to-video for shot 1 and continuations, text-to-video for a
hard cut), and the joined video has exactly duration x fps frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from wanflash.pipelines.multishot import render_shots
from wanflash.pipelines.shots import Shot, shot_plan_problems


def _record(monkeypatch: pytest.MonkeyPatch, pipe: Any, name: str, log: list[tuple[str, Any]]) -> None:
    original = pipe.encode_prompt

    def encode_prompt(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        log.append((name, prompt))
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", encode_prompt)


def test_shots_reach_the_right_diffusers_pipeline(engine, image, spec_factory, monkeypatch) -> None:
    log: list[tuple[str, Any]] = []
    _record(monkeypatch, engine.i2v, "i2v", log)
    _record(monkeypatch, engine.t2v, "t2v", log)
    shots = [Shot(1, "a cat walks in the city"), Shot(1, "a dog runs in the forest", "cut"),
             Shot(1, "the dog turns slowly", "continue")]
    spec = spec_factory(1280, 720, duration=3).model_copy(update={"width": 64, "height": 48, "shot_type": "multi"})
    assert shot_plan_problems(shots, spec.duration) == []
    result = render_shots(engine, spec, shots, image=image)
    (video,) = result.videos
    assert video.shape == (48, 48, 64, 3) and video.dtype == np.uint8
    assert [(pipe, p[0]) for pipe, p in log] == [("i2v", shots[0].prompt), ("t2v", shots[1].prompt),
                                                 ("i2v", shots[2].prompt)]
    # Shot 3 continues shot 2: 16 frames kept of 17 generated (Wan needs 4n+1, so 17 exactly).
    assert [s["frames"] for s in result.info["shots"]] == [16, 16, 16]
    assert [i["clips"] for i in result.info["shot_infos"]] == [[17], [17], [17]]
    assert video.std() > 1.0

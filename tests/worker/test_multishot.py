"""shotType multi in the render path: each shot is its own generate call with its own prompt and
frame count; continuations start from the previous shot's last frame, hard cuts from text (or from
the input image on an I2V-only pipeline); the joined video has exactly duration x fps frames."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.contract.specs import validate_video_task
from wanflash import MODEL_ID
from wanflash.errors import JobCancelled
from wanflash.jobs.model import JobSpec
from wanflash.media.probe import probe_file
from wanflash.media.track import AudioTrack
from wanflash.pipelines.base import GenerationResult
from wanflash.pipelines.fake import FakePipeline
from wanflash.pipelines.multishot import join_tracks, render_shots, shot_seed, shot_starts
from wanflash.pipelines.profiles import PROFILES
from wanflash.pipelines.prompt_extend import PromptExtender
from wanflash.pipelines.shots import Shot, fallback_shot_plan, shot_plan_problems, validate_shot_plan
from wanflash.worker.protocol import RunJob
from wanflash.worker.render import Renderer

PLAN = {"shots": [
    {"duration": 2, "prompt": "shot one: the cat stretches", "transition": "continue"},
    {"duration": 3, "prompt": "shot two: close-up of the cat's eyes", "transition": "cut"},
    {"duration": 1, "prompt": "shot three: the cat jumps away", "transition": "continue"},
]}


class Recording(FakePipeline):
    """The fake pipeline, recording what each call was asked; optionally I2V-only, and with a
    colour cast on image-to-video output (as chained I2V drifts)."""

    def __init__(self, *, text_to_video: bool = True, cast: int = 0, audio_rate: int | None = None) -> None:
        super().__init__(steps=2)
        self.text_to_video = text_to_video
        self.cast = cast
        self.audio_rate = audio_rate
        self.calls: list[dict[str, Any]] = []

    def generate(self, spec, on_step, *, image=None):  # type: ignore[no-untyped-def]
        if image is None and not self.text_to_video:
            raise AssertionError("text-to-video asked of an I2V-only pipeline")
        self.calls.append({"prompt": spec.positive_prompt, "frames": spec.num_frames, "seeds": list(spec.seeds),
                           "image": None if image is None else np.asarray(image.convert("RGB")).copy()})
        out = super().generate(spec, on_step, image=image)
        if image is not None and self.cast:
            out.videos = [np.clip(v.astype(np.int16) + np.array([self.cast, 0, -self.cast]), 0, 255).astype(np.uint8)
                          for v in out.videos]
        if self.audio_rate:
            n = round(spec.num_frames / spec.fps * self.audio_rate)
            out.audio = [AudioTrack(np.full((1, n), len(self.calls), np.float32), self.audio_rate)]
        return out


class PlanExtender(PromptExtender):
    backend = "test"

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan

    def complete(self, system: str, user: str, *, image: Any, max_tokens: int) -> tuple[str, str | None]:
        return json.dumps(self.plan), None


def _task(**overrides: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL_ID,
            "positivePrompt": "a cat", "width": 960, "height": 960, "duration": 6, "seed": 5,
            "providerSettings": {"alibaba": {"shotType": "multi", "promptExtend": True}}, **overrides}


def _job(tmp_path: Path, image: Image.Image | None = None, **overrides: Any) -> RunJob:
    image_path = None
    task = _task(**overrides)
    if image is not None:
        image_path = str(tmp_path / "in.png")
        image.save(image_path)
        task["inputs"] = {"frameImages": [image_path]}
    # Validated as sent, then generated small: the render path does not care about the size.
    spec = validate_video_task(task, profile=PROFILES["tiny"]).model_copy(update={"width": W, "height": H})
    if image is not None:
        spec = spec.model_copy(update={"image_key": "in.png", "image_size": image.size})
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return RunJob(task_uuid=spec.task_uuid, attempt=1, spec_json=spec.model_dump_json(), out_dir=str(out),
                  image_path=image_path)


W, H = 64, 48


def _image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def test_each_shot_gets_its_prompt_frames_and_start(tmp_path: Path) -> None:
    pipe, image = Recording(), _image()
    done = Renderer(pipe, PlanExtender(PLAN)).render(_job(tmp_path, image), lambda *a: None)
    assert [c["prompt"] for c in pipe.calls] == [s["prompt"] for s in PLAN["shots"]]
    # 16 fps: 2 s, 3 s (a cut: exactly its frames), 1 s + the seam frame that is dropped.
    assert [c["frames"] for c in pipe.calls] == [32, 48, 17]
    np.testing.assert_array_equal(pipe.calls[0]["image"], np.asarray(image))  # shot 1: the input image
    assert pipe.calls[1]["image"] is None  # hard cut: text-to-video
    assert pipe.calls[2]["image"] is not None  # continuation: the last frame of shot 2 (checked below)
    assert [c["seeds"] for c in pipe.calls] == [[shot_seed(5, i)] for i in range(3)]
    assert len({c["seeds"][0] for c in pipe.calls}) == 3
    assert [s["start"] for s in done.pipeline_info["shots"]] == ["input-image", "text", "previous-frame"]
    (out,) = done.outputs
    assert out.seed == 5
    info = probe_file(Path(out.path))
    assert (info.width, info.height, info.frames) == (W, H, 96)
    assert info.duration == pytest.approx(6.0, abs=1 / 16)
    assert done.prompt_extend is not None and done.prompt_extend.extended is True
    assert [s.prompt for s in done.prompt_extend.shots or []] == [s["prompt"] for s in PLAN["shots"]]


def test_continuation_starts_from_the_shown_last_frame_and_cut_from_text(tmp_path: Path) -> None:
    pipe, image = Recording(), _image()
    spec = JobSpec.model_validate_json(_job(tmp_path, image).spec_json)
    shots = validate_shot_plan(PLAN["shots"], 6)
    result = render_shots(pipe, spec, shots, image=image)
    (video,) = result.videos
    assert video.shape == (96, H, W, 3)
    # Shot 3 was started from exactly the last frame shown of shot 2 (frame 32 + 48 - 1).
    np.testing.assert_array_equal(pipe.calls[2]["image"], video[79])


def test_i2v_only_pipeline_cuts_back_to_the_input_image(tmp_path: Path) -> None:
    pipe, image = Recording(text_to_video=False), _image()
    done = Renderer(pipe, PlanExtender(PLAN)).render(_job(tmp_path, image), lambda *a: None)
    assert [s["start"] for s in done.pipeline_info["shots"]] == ["input-image", "input-image", "previous-frame"]
    np.testing.assert_array_equal(pipe.calls[1]["image"], np.asarray(image))
    assert pipe.calls[1]["prompt"] == PLAN["shots"][1]["prompt"]


def test_shot_starts_without_an_image() -> None:
    shots = validate_shot_plan(PLAN["shots"], 6)
    assert shot_starts(shots, has_image=False, text_to_video=True) == ["text", "text", "previous-frame"]


def test_single_stays_one_continuous_generation(tmp_path: Path) -> None:
    pipe = Recording()
    done = Renderer(pipe, PlanExtender({"unused": True})).render(
        _job(tmp_path, providerSettings={"alibaba": {"shotType": "single"}}), lambda *a: None)
    assert len(pipe.calls) == 1 and pipe.calls[0]["frames"] == 96
    assert "shots" not in done.pipeline_info


def test_passthrough_plan_renders_continuing_shots(tmp_path: Path) -> None:
    """No backend: the deterministic plan (same prompt, all continuations) is what is rendered."""
    from wanflash.pipelines.prompt_extend import PassthroughExtender

    pipe = Recording()
    done = Renderer(pipe, PassthroughExtender()).render(_job(tmp_path, _image(), duration=12), lambda *a: None)
    assert [c["frames"] for c in pipe.calls] == [64, 65, 65]  # 4 s + 4 s + 4 s, seams dropped
    assert {c["prompt"] for c in pipe.calls} == {"a cat"}
    assert probe_file(Path(done.outputs[0].path)).frames == 192
    assert done.prompt_extend is not None and done.prompt_extend.extended is False


@pytest.mark.parametrize("fps", [16, 24])
@pytest.mark.parametrize("duration", range(2, 16))
def test_every_duration_renders_exactly_duration_times_fps(fps: int, duration: int) -> None:
    """Plans as an LLM might send them (uneven, rescaled, cuts mixed in) always join to the exact length."""
    rng = np.random.default_rng(duration * 100 + fps)
    n = int(rng.integers(2, 6))
    raw = [{"duration": float(rng.uniform(0.5, 6)), "prompt": f"p{i}",
            "transition": "cut" if rng.random() < 0.4 else "continue"} for i in range(n)]
    for shots in (validate_shot_plan(raw, duration), fallback_shot_plan("p", duration)):
        assert shot_plan_problems(shots, duration) == []
        spec = _small_spec(duration, fps, seeds=[3, 4])
        result = render_shots(Recording(), spec, shots, image=Image.new("RGB", (64, 48), (200, 30, 30)))
        assert [v.shape for v in result.videos] == [(duration * fps, 48, 64, 3)] * 2
        assert result.seeds == [3, 4]
        assert sum(s["frames"] for s in result.info["shots"]) == duration * fps


def _small_spec(duration: int, fps: int, seeds: list[int]) -> JobSpec:
    return JobSpec(task_uuid=str(uuid.uuid4()), model=MODEL_ID, profile="tiny", positive_prompt="p", width=64,
                   height=48, resolution_class="720p", duration=duration, fps=fps, num_frames=duration * fps,
                   image_key="img", seeds=seeds, number_results=len(seeds), cost=0.0, shot_type="multi")


class Still(FakePipeline):
    """Image-to-video that holds the start frame, with a colour cast (as chained I2V drifts)."""

    def generate(self, spec, on_step, *, image=None):  # type: ignore[no-untyped-def]
        base = np.asarray(image.convert("RGB").resize((spec.width, spec.height)), dtype=np.int16)
        clip = np.clip(base + np.array([40, 0, -40]), 0, 255).astype(np.uint8)
        return GenerationResult(videos=[np.repeat(clip[None], spec.num_frames, axis=0)], seeds=list(spec.seeds))


def test_colours_matched_across_a_continuation_seam() -> None:
    """Each continuation is mapped back onto the frame it continues from, so the seam does not
    jump and the cast does not compound from shot to shot."""
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(60, 200, (H, W, 3), dtype=np.uint8))
    shots = [Shot(1, "a"), Shot(1, "b", "continue"), Shot(1, "c", "continue")]
    (video,) = render_shots(Still(), _small_spec(3, 16, seeds=[1]), shots, image=image).videos
    means = video.reshape(48, -1, 3).mean(axis=1)
    # Shot 1 keeps the cast (nothing to match it to); shots 2 and 3 stay at shot 1's colours.
    assert np.abs(means[16:] - means[15]).max() < 1.0
    assert np.abs(means[15] - (np.asarray(image, float).reshape(-1, 3).mean(0) + [40, 0, -40])).max() < 6


def test_same_seed_same_video_and_progress_cancel() -> None:
    shots = validate_shot_plan(PLAN["shots"], 6)
    spec = _small_spec(6, 16, seeds=[9])
    seen: list[tuple[int, int]] = []
    a = render_shots(Recording(), spec, shots, lambda s, t, st: seen.append((s, t)), image=None).videos[0]
    b = render_shots(Recording(), spec, shots, image=None).videos[0]
    np.testing.assert_array_equal(a, b)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)  # monotone across shots
    assert seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1

    def cancel(step: int, total: int, stage: str) -> None:
        if step > total // 2:
            raise JobCancelled(spec.task_uuid)

    pipe = Recording()
    with pytest.raises(JobCancelled):
        render_shots(pipe, spec, shots, cancel, image=None)
    assert len(pipe.calls) == 2  # stopped in shot 2: shot 3 never started


def test_soundtracks_join_without_the_seam_frame() -> None:
    shots = [Shot(1, "a"), Shot(1, "b", "cut"), Shot(1, "c", "continue")]
    result = render_shots(Recording(audio_rate=1600), _small_spec(3, 16, seeds=[1]), shots, image=None)
    (track,) = result.audio
    assert track is not None and track.rate == 1600
    assert track.samples.shape == (1, 3 * 1600)  # the seam frame's 100 samples of shot 3 dropped
    assert list(np.unique(track.samples[0, :1600])) == [1.0]
    assert join_tracks([track, None]) is None
    assert join_tracks([AudioTrack(np.zeros((1, 4), np.float32), 8000),
                        AudioTrack(np.zeros((1, 4), np.float32), 16000)]) is None


def test_result_shape_checked() -> None:
    class Short(FakePipeline):
        def generate(self, spec, on_step, *, image=None):  # type: ignore[no-untyped-def]
            r = super().generate(spec, on_step, image=image)
            return GenerationResult(videos=[r.videos[0][:-1]], seeds=r.seeds)

    with pytest.raises(ValueError, match="frames"):
        render_shots(Short(), _small_spec(2, 16, seeds=[1]), [Shot(1, "a"), Shot(1, "b")], image=None)

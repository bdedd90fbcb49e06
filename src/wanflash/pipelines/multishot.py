"""Render a multi-shot plan (``shotType: "multi"``) with any ``VideoPipeline``.

Wan has no multi-shot mode, so each shot of the plan is one ordinary ``pipeline.generate`` call
with the shot's own prompt and frame count, and the shots are joined with cuts:

* shot 1 starts from the input image (image-to-video), or from its prompt alone when the
  request has no image;
* a ``"continue"`` shot starts from the last frame of the shot before (image-to-video). That
  frame is generated again as the shot's first frame and dropped, and the shot's colours are
  matched to it (:func:`~wanflash.pipelines.postprocess.match_colors`, as for chained clips);
* a ``"cut"`` shot is text-driven (text-to-video) when the pipeline can generate from text. A
  pipeline that cannot (an I2V-only profile, e.g. A14B without a ``t2v/`` directory) starts the
  cut from the **input image** with the new shot's prompt: a cut back to the opening frame
  rather than a failed task. A cut's colours are pulled half-way (``CUT_COLOR_STRENGTH``)
  toward the grade of the video's first frame, so the shots look like one film without forcing
  a new view onto the first view's exact colours.

Guarantees: every result has exactly ``spec.num_frames`` frames (split between the shots by
:func:`~wanflash.pipelines.shots.shot_frame_counts`, so a shot of *d* seconds has *d x fps*
frames), at ``spec.width x spec.height``; result *i* reports ``spec.seeds[i]`` and its shots use
seeds derived from it, so a seed gives the same video; ``on_step`` sees one progress scale
over all shots and can cancel between any two denoising steps. Results are rendered one by one
(each continues from its own frames). No torch is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wanflash.pipelines.base import AudioTrack, GenerationResult, OnStep, no_progress
from wanflash.pipelines.postprocess import match_colors, to_uint8
from wanflash.pipelines.shots import Shot, shot_frame_counts

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.jobs.model import JobSpec
    from wanflash.pipelines.base import VideoPipeline

ShotStart = Literal["input-image", "previous-frame", "text"]

CUT_COLOR_STRENGTH = 0.5
SHOT_SEED_STRIDE = 0x2545F4914F6CDD1D  # odd: distinct shot seeds for every result seed
PROGRESS_SCALE = 1000  # progress units per pipeline call


def shot_seed(seed: int, index: int) -> int:
    """The noise seed of shot ``index`` of the result with ``seed`` (shot 1 uses the seed itself)."""
    return seed if index == 0 else (seed + SHOT_SEED_STRIDE * index) % (1 << 63)


def shot_starts(shots: Sequence[Shot], *, has_image: bool, text_to_video: bool) -> list[ShotStart]:
    """What each shot is conditioned on (see the module docstring)."""
    starts: list[ShotStart] = []
    for i, shot in enumerate(shots):
        if i == 0:
            starts.append("input-image" if has_image else "text")
        elif shot.transition == "continue":
            starts.append("previous-frame")
        elif text_to_video:
            starts.append("text")
        elif has_image:
            starts.append("input-image")
        else:  # no text-to-video and no image: shot 1 could not have run either; keep the chain
            starts.append("previous-frame")
    return starts


@dataclass(frozen=True)
class ShotCall:
    """One planned ``generate`` call: what it is told and what is kept of it."""

    index: int
    prompt: str
    frames: int  # frames this shot contributes to the output
    generate_frames: int  # frames asked of the pipeline (one more when the seam frame is dropped)
    start: ShotStart
    transition: str

    def to_dict(self) -> dict[str, Any]:
        return {"shot": self.index + 1, "frames": self.frames, "start": self.start, "transition": self.transition}


def plan_shot_calls(shots: Sequence[Shot], spec: JobSpec, *, has_image: bool, text_to_video: bool) -> list[ShotCall]:
    frames = shot_frame_counts(shots, spec.fps, spec.num_frames)
    starts = shot_starts(shots, has_image=has_image, text_to_video=text_to_video)
    return [
        ShotCall(index=i, prompt=s.prompt, frames=f, generate_frames=f + (1 if st == "previous-frame" else 0),
                 start=st, transition=s.transition)
        for i, (s, f, st) in enumerate(zip(shots, frames, starts, strict=True))
    ]


def render_shots(pipeline: VideoPipeline, spec: JobSpec, shots: Sequence[Shot], on_step: OnStep = no_progress,
                 *, image: Image.Image | None = None) -> GenerationResult:
    """Generate every result of ``spec`` as the multi-shot ``shots`` plan; see the module docstring."""
    from PIL import Image

    calls = plan_shot_calls(shots, spec, has_image=image is not None,
                            text_to_video=bool(getattr(pipeline, "text_to_video", True)))
    n_calls = len(calls) * len(spec.seeds)
    videos: list[np.ndarray] = []
    audio: list[AudioTrack | None] = []
    call_infos: list[dict[str, object]] = []
    done = 0
    for seed in spec.seeds:
        parts: list[np.ndarray] = []
        tracks: list[AudioTrack | None] = []
        anchor: np.ndarray | None = None  # the video's first frame, float in [0, 1]
        last: np.ndarray | None = None  # the last frame shown so far, uint8
        for call in calls:
            start = None
            if call.start == "input-image":
                start = image
            elif call.start == "previous-frame":
                assert last is not None  # shot 1 never continues; not input validation
                start = Image.fromarray(last)
            shot_spec = spec.model_copy(update={
                "positive_prompt": call.prompt,
                "num_frames": call.generate_frames,
                "seeds": [shot_seed(seed, call.index)],
                "number_results": 1,
            })
            offset = done

            def step(s: int, total: int, stage: str, offset: int = offset) -> None:
                frac = min(1.0, s / total) if total > 0 else 1.0
                on_step(offset * PROGRESS_SCALE + round(frac * PROGRESS_SCALE), n_calls * PROGRESS_SCALE, stage)

            result = pipeline.generate(shot_spec, step, image=start)
            done += 1
            clip = result.videos[0]
            if clip.shape[0] != call.generate_frames:
                raise ValueError(f"shot {call.index + 1}: pipeline returned {clip.shape[0]} frames, "
                                 f"expected {call.generate_frames}")
            clip_f = clip.astype(np.float32) / 255.0
            if call.start == "previous-frame":
                assert last is not None
                clip_f = match_colors(clip_f, last.astype(np.float32) / 255.0)[1:]
            elif anchor is not None:
                clip_f = match_colors(clip_f, anchor, strength=CUT_COLOR_STRENGTH)
            shot_u8 = to_uint8(clip_f)
            if anchor is None:
                anchor = shot_u8[0].astype(np.float32) / 255.0
            parts.append(shot_u8)
            last = shot_u8[-1]
            track = result.audio[0] if result.audio else None
            tracks.append(_drop_first_frame(track, spec.fps) if track is not None and call.start == "previous-frame"
                          else track)
            if len(call_infos) < len(calls):
                call_infos.append(dict(result.info))
        videos.append(np.concatenate(parts))
        audio.append(join_tracks(tracks))
    info: dict[str, object] = {"shots": [c.to_dict() for c in calls], "shot_infos": call_infos}
    return GenerationResult(videos=videos, seeds=list(spec.seeds), audio=audio, info=info)


def _drop_first_frame(track: AudioTrack, fps: int) -> AudioTrack:
    """The track without the samples of its first video frame (the dropped seam frame)."""
    cut = int(round(track.rate / fps))
    return AudioTrack(samples=track.samples[:, cut:], rate=track.rate)


def join_tracks(tracks: Sequence[AudioTrack | None]) -> AudioTrack | None:
    """The shots' soundtracks end to end, or None unless every shot has one at the same rate
    and channel count (a partial soundtrack would drift against the video)."""
    if not tracks or any(t is None for t in tracks):
        return None
    ts = [t for t in tracks if t is not None]
    if len({t.rate for t in ts}) != 1 or len({t.samples.shape[0] for t in ts}) != 1:
        return None
    return AudioTrack(samples=np.concatenate([t.samples for t in ts], axis=1), rate=ts[0].rate)

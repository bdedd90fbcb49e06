"""What a worker serves: its queues, the queue of each task, and the worker's own refusal."""

from __future__ import annotations

from tests.jobs.test_store import spec
from wanflash.config import Settings
from wanflash.jobs.capabilities import WorkerCapabilities, task_queue
from wanflash.worker.supervisor import capabilities_for


def test_capabilities_come_from_the_worker_settings() -> None:
    caps = capabilities_for(Settings(profile="wan2.2-ti2v-5b", audio_model="none", safety_detector="nudenet",
                                     prompt_extend_backend="openai"))
    assert caps == WorkerCapabilities(profile="wan2.2-ti2v-5b", fps=24, max_clip_frames=121, native_audio="none",
                                      safety_detector="nudenet", prompt_extend="openai")
    assert caps.queues() == ["wan2.2-ti2v-5b", "wan2.2-ti2v-5b+safety"]
    assert capabilities_for(Settings()).queues() == ["tiny", "tiny+audio"]  # ltx2 by default, no detector


def test_a_task_waits_in_the_queue_of_what_it_needs() -> None:
    assert task_queue(spec()) == "tiny+audio"  # sound on, no input track: it must be generated
    assert task_queue(spec().model_copy(update={"audio_key": "inputs/t/a.mp3"})) == "tiny"  # the track is muxed
    assert task_queue(spec().model_copy(update={"audio": False, "safety_mode": "full"})) == "tiny+safety"
    full = WorkerCapabilities(profile="tiny", fps=16, max_clip_frames=81, native_audio="ltx2", safety_detector="clip")
    assert full.queues() == ["tiny", "tiny+safety", "tiny+audio", "tiny+audio+safety"]


def test_a_worker_refuses_what_it_was_not_planned_for() -> None:
    five_b = WorkerCapabilities(profile="wan2.2-ti2v-5b", fps=24, max_clip_frames=121)
    code, message = five_b.refusal(spec()) or ("", "")
    assert code == "profileMismatch" and "tiny (16 fps)" in message and "wan2.2-ti2v-5b (24 fps)" in message
    tiny = WorkerCapabilities(profile="tiny", fps=16, max_clip_frames=81)
    assert tiny.refusal(spec())[0] == "unsupportedAudio"  # type: ignore[index]
    assert tiny.refusal(spec().model_copy(update={"audio": False, "safety_mode": "fast"}))[0] == (  # type: ignore[index]
        "unsupportedSafetyCheck")
    assert tiny.refusal(spec().model_copy(update={"audio": False})) is None


def test_a_record_from_a_newer_worker_still_reads() -> None:
    raw = '{"profile": "tiny", "fps": 16, "max_clip_frames": 81, "a_field_added_later": 1}'
    assert WorkerCapabilities.model_validate_json(raw).profile == "tiny"

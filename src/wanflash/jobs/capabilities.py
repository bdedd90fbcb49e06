"""What a worker serves, and the queue each task waits in: the records that let the API plan for
the workers that exist instead of for its own settings.

Every worker (the supervisor of ``wanflash serve``, each ``wanflash worker`` slot, each group
leader) publishes a :class:`WorkerCapabilities` into the job source when it starts and again every
third of ``lease_seconds`` (:meth:`~wanflash.jobs.source.WorkerRegistry.publish_worker`); a record not refreshed within
its ttl (``lease_seconds``) no longer counts as live, and a stopping worker withdraws at once. The
API plans fps and frame count from these records and gates generated audio and content checking
on them (:mod:`wanflash.api.fleet`).

Queues, one per capability (architecture B.5): a task waits in :func:`task_queue` of its spec,
``<profile>`` plus ``+audio`` when its sound must be generated and ``+safety`` when it asks for a
content check. A worker claims from every queue it can serve (:meth:`WorkerCapabilities.queues`):
its profile's plain queue and, with an audio model or a detector, the ones needing them. So in a
mixed fleet a task is only ever claimed by a worker of the profile it was planned for, with the
features it needs, and :meth:`WorkerCapabilities.refusal` is the worker's last check.

Plain data: no torch. A worker builds its record from its profile with
:func:`wanflash.worker.supervisor.capabilities_for`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from wanflash.jobs.model import JobSpec

#: How long a worker's last record is kept as "last-known capabilities" after it was last seen.
KNOWN_WORKER_SECONDS = 7 * 86400


class WorkerCapabilities(BaseModel):
    """What one worker serves; stored as JSON in the job source."""

    # "ignore": during a rolling upgrade an older API reads records a newer worker wrote.
    model_config = ConfigDict(frozen=True, extra="ignore")

    profile: str  # the engine profile (WANFLASH_PROFILE); JobSpec.profile of the tasks it runs
    fps: int = Field(gt=0)  # native frame rate: a task's num_frames is duration x fps
    max_clip_frames: int = Field(gt=0)  # longest single generation (4k+1); longer clips are chained
    native_audio: str = "none"  # audio model (WANFLASH_AUDIO_MODEL): "none" cannot generate sound
    safety_detector: str = "none"  # WANFLASH_SAFETY_DETECTOR: "none" cannot check content
    prompt_extend: str = "none"  # WANFLASH_PROMPT_EXTEND_BACKEND ("none" passes prompts through)

    @property
    def name(self) -> str:
        """The profile name (what :func:`wanflash.contract.validation.plan_job` reads from a profile)."""
        return self.profile

    @property
    def audio(self) -> bool:
        return self.native_audio != "none"

    @property
    def safety(self) -> bool:
        return self.safety_detector != "none"

    def queues(self) -> list[str]:
        """Every queue this worker can serve."""
        return [queue_name(self.profile, audio=a, safety=s)
                for a in ((False, True) if self.audio else (False,))
                for s in ((False, True) if self.safety else (False,))]

    def refusal(self, spec: JobSpec) -> tuple[str, str] | None:
        """``(code, message)`` when this worker cannot run ``spec`` as planned, else None."""
        if spec.profile != self.profile:
            return ("profileMismatch",
                    (f"The task was planned for profile {spec.profile} ({spec.fps} fps), but this worker serves "
                     f"{self.profile} ({self.fps} fps); it was not run."))
        if needs_native_audio(spec) and not self.audio:
            return ("unsupportedAudio", "The task needs generated audio, but this worker has no audio model.")
        if spec.safety_mode != "none" and not self.safety:
            return ("unsupportedSafetyCheck", "The task asks for a content check, but this worker has no detector.")
        return None


@dataclass(frozen=True)
class WorkerRecord:
    """A published worker: its capabilities, when it was last seen, and until when it counts as live."""

    worker_id: str
    caps: WorkerCapabilities
    seen: float
    expires: float

    def live(self, now: float) -> bool:
        return self.expires > now


def queue_name(profile: str, *, audio: bool, safety: bool) -> str:
    return profile + ("+audio" if audio else "") + ("+safety" if safety else "")


def needs_native_audio(spec: JobSpec) -> bool:
    """The output has sound and no input track supplies it: an audio model must generate it."""
    return spec.audio and spec.audio_key is None


def task_queue(spec: JobSpec) -> str:
    """The queue a task waits in: its profile and the features a worker needs to run it."""
    return queue_name(spec.profile, audio=needs_native_audio(spec), safety=spec.safety_mode != "none")


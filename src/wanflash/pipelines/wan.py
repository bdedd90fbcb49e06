"""The diffusers adapter: Wan image-to-video and text-to-video behind ``VideoPipeline``.

One :class:`WanVideoPipeline` serves every profile (``tiny`` and the real Wan2.2 weights); only
the directory it loads from and the profile's numbers differ. Guarantees of ``generate``:

* each result is exactly ``(spec.num_frames, spec.height, spec.width, 3)`` uint8: the model runs
  at ``profile.generation_size`` and the frames are cover-resized and centre-cropped after;
* one seed per result; a result depends only on its seed (its noise is drawn on the CPU from
  its own generator, whatever the batch it runs in or the device), so one seed gives one video;
* long durations are chained clips (``profiles.plan_segments``): each clip after the first is
  image-to-video from the previous clip's last frame, colour-matched to it, seam frame dropped;
* ``on_step(step, total, "denoise")`` runs after every denoising step of every clip, with
  ``total = steps x clips x pipe calls per clip``; raising from it (``JobCancelled``) ends the
  run before the VAE decode.

Weights layout (diffusers format, local only): ``<root>`` holds a ``WanImageToVideoPipeline``;
text-to-video (requests without an image) uses ``<root>/t2v`` (a ``WanPipeline`` directory whose
transformers are loaded, everything else shared) or, for TI2V-5B-style weights whose one
transformer does both, the same transformer. Pipeline flags (``expand_timesteps``,
``boundary_ratio``) and the sampler come from the profile, not from ``model_index.json``; every
module is in the configured dtype except the VAE (float32). Distilled LoRAs are matched to the
experts by :mod:`wanflash.pipelines.loras`, fused, and their adapters unloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline
from diffusers.utils import logging as diffusers_logging

from wanflash.errors import JobFailed
from wanflash.pipelines.base import GenerationResult, OnStep, no_progress
from wanflash.pipelines.loras import COMPONENT, assign
from wanflash.pipelines.memory import MemoryPlan, choose_plan, generation_size
from wanflash.pipelines.placement import activate, apply_plan, gpu_total_bytes
from wanflash.pipelines.postprocess import fit_image, fit_video, match_colors, to_uint8
from wanflash.pipelines.profiles import Profile, Sampler, plan_segments

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import EngineConfig
    from wanflash.jobs.model import JobSpec

log = logging.getLogger(__name__)
STAGE = "denoise"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BatchImageI2VPipeline(WanImageToVideoPipeline):
    """``WanImageToVideoPipeline`` that accepts one start image per batch item.

    Chained clips start each result from its own last frame; upstream encodes a single image and
    repeats it. Here, when ``image`` holds one image per item, each item is prepared with its own
    image and pre-drawn latents and the parts are stacked. Everything else is upstream code.
    """

    def prepare_latents(self, image, batch_size, num_channels_latents=16, height=480, width=832,
                        num_frames=81, dtype=None, device=None, generator=None, latents=None,
                        last_image=None):
        if batch_size == 1 or image.shape[0] != batch_size or latents is None:
            return super().prepare_latents(image, batch_size, num_channels_latents, height, width, num_frames,
                                           dtype, device, generator, latents, last_image)
        parts = [
            super(BatchImageI2VPipeline, self).prepare_latents(
                image[i:i + 1], 1, num_channels_latents, height, width, num_frames, dtype, device, None,
                latents[i:i + 1], None if last_image is None else last_image[i:i + 1])
            for i in range(batch_size)
        ]
        out = [torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])]
        if self.config.expand_timesteps:
            out.append(parts[0][2])  # the first-frame mask is the same for every item
        return tuple(out)


class StepListEulerScheduler(FlowMatchEulerDiscreteScheduler):
    """Euler flow matching on a fixed list of training timesteps (a step-distilled sampler).

    The Wan pipelines call ``set_timesteps(n)``; this scheduler answers with the sigmas
    ``t / num_train_timesteps`` for ``t`` in ``denoising_steps``, which the parent class shifts and
    ends with 0, exactly as lightx2v's ``WanStepDistillScheduler`` does."""

    denoising_steps: tuple[int, ...] = ()

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        if sigmas is None and timesteps is None and self.denoising_steps:
            if num_inference_steps not in (None, len(self.denoising_steps)):
                raise ValueError(f"this sampler was distilled for {len(self.denoising_steps)} steps, "
                                 f"not {num_inference_steps}")
            sigmas = [t / self.config.num_train_timesteps for t in self.denoising_steps]
            num_inference_steps = None
        super().set_timesteps(num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps)


def distill_scheduler(sampler: Sampler) -> StepListEulerScheduler:
    scheduler = StepListEulerScheduler(num_train_timesteps=1000, shift=sampler.shift)
    scheduler.denoising_steps = tuple(sampler.denoising_steps or ())
    return scheduler


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[setting]


def segment_seed(seed: int, index: int) -> int:
    """The noise seed of clip ``index`` of the result with ``seed`` (clip 0 uses the seed itself)."""
    return (seed + 0x9E3779B97F4A7C15 * index) % (1 << 64)


class WanVideoPipeline:
    """``VideoPipeline`` over diffusers' Wan pipelines; see the module docstring."""

    def __init__(self, engine: EngineConfig, profile: Profile, root: Path, *, lora_dir: Path | None = None) -> None:
        self.engine = engine
        self.profile = profile
        self.root = Path(root)
        self.lora_dir = lora_dir
        self.name = profile.name
        self.device = resolve_device(engine.device)
        self.dtype = resolve_dtype(engine.dtype, self.device)
        self.i2v: WanImageToVideoPipeline | None = None
        self.t2v: WanPipeline | None = None
        self._offloaded_for: Any = None
        self.plan: MemoryPlan | None = None  # chosen at load (wanflash.pipelines.memory)

    # -- loading

    def load(self) -> None:
        if self.i2v is not None:
            return
        diffusers_logging.disable_progress_bar()
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        if not (self.root / "model_index.json").is_file():
            raise FileNotFoundError(f"no diffusers pipeline (model_index.json) in {self.root}")
        profile = self.profile
        # Wan's VAE is numerically fragile in half precision; keep it in float32 as upstream advises.
        vae = AutoencoderKLWan.from_pretrained(self.root, subfolder="vae", dtype=torch.float32)
        extra: dict[str, Any] = {"vae": vae}
        if profile.sampler.kind == "flow-euler-distill":
            extra["scheduler"] = distill_scheduler(profile.sampler)
        # The profile's flags, not the index's: few-step checkpoints ship indexes without them.
        i2v = BatchImageI2VPipeline.from_pretrained(self.root, dtype=self.dtype,
                                                    expand_timesteps=profile.expand_timesteps,
                                                    boundary_ratio=profile.boundary_ratio, **extra)
        t2v_dir = self.root / "t2v"
        shared = {"text_encoder": i2v.text_encoder, "tokenizer": i2v.tokenizer, "vae": i2v.vae,
                  "scheduler": i2v.scheduler}
        if profile.t2v == "directory" and (t2v_dir / "model_index.json").is_file():
            t2v = WanPipeline.from_pretrained(t2v_dir, dtype=self.dtype, boundary_ratio=profile.t2v_boundary_ratio,
                                              **shared)
        elif profile.t2v == "same-transformer":
            # TI2V-5B: the same transformer does text-to-video. Built from the shared parts rather
            # than with from_pipe, which casts every module to float32 (or one given dtype, VAE included).
            t2v = WanPipeline(**shared, transformer=i2v.transformer, transformer_2=None, boundary_ratio=None,
                              expand_timesteps=profile.expand_timesteps)
        else:
            t2v = None
        if self.lora_dir is not None:
            self._load_loras(i2v, t2v)
        self.adopt(i2v, t2v)

    def adopt(self, i2v: WanImageToVideoPipeline, t2v: WanPipeline | None) -> None:
        """Make loaded pipelines this engine's: attention backend, memory plan, compile.

        The last part of :meth:`load`, separate so ``bench/gpu_latency.py`` can hand it full-size
        random-weight pipelines built in memory and measure exactly what the service runs."""
        for pipe in (i2v, t2v):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
        transformers = self._transformers(i2v, t2v)
        if self.engine.attention_backend:
            for t in transformers:
                t.set_attention_backend(self.engine.attention_backend)
        separate_t2v = t2v is not None and t2v.transformer is not i2v.transformer
        self.plan = choose_plan(self.profile.name, gpu_total_bytes(self.device), setting=self.engine.memory_setting,
                                fp8=self.engine.fp8_weights, vae_tiling=self.engine.vae_tiling,
                                native_1080p=self.engine.native_1080p, t2v=separate_t2v)
        apply_plan(self.plan, (i2v, t2v), self.device, self.dtype)
        if self.engine.compile:
            for t in transformers:
                t.compile_repeated_blocks(fullgraph=True)
        self.i2v, self.t2v = i2v, t2v

    def module_dtypes(self) -> dict[str, set[torch.dtype]]:
        """The parameter dtypes of every loaded module (``i2v.transformer``, ``t2v.text_encoder``, ...),
        leaving out the parts a model class keeps in float32 on purpose (``_keep_in_fp32_modules``:
        Wan's time embedder and modulation tables)."""
        out: dict[str, set[torch.dtype]] = {}
        for prefix, pipe in (("i2v", self.i2v), ("t2v", self.t2v)):
            if pipe is None:
                continue
            for name, module in pipe.components.items():
                if isinstance(module, torch.nn.Module):
                    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
                    out[f"{prefix}.{name}"] = {p.dtype for n, p in module.named_parameters()
                                               if not keep.intersection(n.split("."))}
        return out

    def transformers(self) -> list[torch.nn.Module]:
        """The loaded transformers (each once): what context parallelism splits."""
        return self._transformers(self.i2v, self.t2v)

    @staticmethod
    def _transformers(*pipes: Any) -> list[torch.nn.Module]:
        seen: dict[int, torch.nn.Module] = {}
        for pipe in pipes:
            if pipe is None:
                continue
            for name in ("transformer", "transformer_2"):
                t = getattr(pipe, name, None)
                if t is not None:
                    seen[id(t)] = t
        return list(seen.values())

    def _load_loras(self, i2v: WanImageToVideoPipeline, t2v: WanPipeline | None) -> None:
        """Distilled LoRAs, each file matched to its expert by name (:mod:`wanflash.pipelines.loras`),
        fused into the weights, then the adapters removed: inference pays nothing for them."""
        assert self.lora_dir is not None
        pipes: dict[str, Any] = {"i2v": i2v}
        if t2v is not None and t2v.transformer is not i2v.transformer:
            pipes["t2v"] = t2v
        wanted = [(task, expert) for task, pipe in pipes.items() for expert in ("high", "low")
                  if getattr(pipe, COMPONENT[expert], None) is not None]
        chosen = assign(self.lora_dir, wanted)  # raises LoraMismatch before anything is loaded
        for task, pipe in pipes.items():
            components = []
            for expert in ("high", "low"):
                f = chosen.get((task, expert))  # type: ignore[call-overload]
                if f is None:
                    continue
                log.info("LoRA %s -> %s %s", f.path.name, task, COMPONENT[expert])
                pipe.load_lora_weights(str(f.path), adapter_name=f"{task}_{expert}",
                                       load_into_transformer_2=expert == "low")
                components.append(COMPONENT[expert])
            pipe.fuse_lora(components=components)
            pipe.unload_lora_weights()

    def _activate(self, pipe: Any) -> None:
        self._offloaded_for = activate(self.plan, pipe, self.device, self._offloaded_for)

    @property
    def text_to_video(self) -> bool:
        """Whether a clip can start from text alone (multi-shot hard cuts use it when it can)."""
        return self.t2v is not None

    # -- generation

    def generate(self, spec: JobSpec, on_step: OnStep = no_progress, *,
                 image: Image.Image | None = None) -> GenerationResult:
        if self.i2v is None:
            raise RuntimeError("call load() before generate()")
        if not spec.seeds:
            raise ValueError("spec.seeds is empty")
        batch = self.engine.batch_results and len(spec.seeds) > 1
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # memory_stats()' peak is per job
        try:
            return self._generate(spec, on_step, image, batch=batch)
        except torch.OutOfMemoryError:
            if not batch:
                raise
            # The batch did not fit: free it and run the results one by one.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return self._generate(spec, on_step, image, batch=False)

    def memory_stats(self) -> dict[str, object]:
        """CUDA memory of this process and device in bytes, for ``/metrics``; empty on CPU."""
        if self.device.type != "cuda":
            return {}
        free, total = torch.cuda.mem_get_info(self.device)
        return {
            "device": str(self.device),
            "allocated": torch.cuda.memory_allocated(self.device),
            "reserved": torch.cuda.memory_reserved(self.device),
            "peak_allocated": torch.cuda.max_memory_allocated(self.device),
            "device_used": total - free,
            "device_total": total,
        }

    def _generate(self, spec: JobSpec, on_step: OnStep, image: Image.Image | None, *, batch: bool) -> GenerationResult:
        assert self.plan is not None
        gw, gh = generation_size(self.profile, self.plan, spec.width, spec.height)
        clips = plan_segments(spec.num_frames, self.profile.max_clip_frames)
        seeds = list(spec.seeds)
        groups = [seeds] if batch else [[s] for s in seeds]
        total = self.profile.steps * len(clips) * len(groups)
        done = 0

        def step(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            on_step(done, total, STAGE)
            return kwargs

        if image is None and self.t2v is None:
            raise JobFailed("textToVideoUnavailable",
                            f"profile {self.profile.name} has no text-to-video weights: add a WanPipeline "
                            f"directory at {self.root / 't2v'} or send inputs.frameImages", retryable=False)
        start: np.ndarray | None = None
        if image is not None:
            start = np.asarray(fit_image(image, gw, gh), dtype=np.float32) / 255.0
        last: dict[int, np.ndarray | None] = {s: start for s in seeds}
        parts: dict[int, list[np.ndarray]] = {s: [] for s in seeds}
        for k, frames in enumerate(clips):
            for group in groups:
                out = self._call(spec, group, k, frames, gw, gh, [last[s] for s in group], step)
                for s, clip in zip(group, out):
                    if k > 0:
                        clip = match_colors(clip, last[s])[1:]
                    parts[s].append(clip)
                    # Quantise now so the next clip starts from exactly the frame that is shown.
                    last[s] = np.rint(clip[-1] * 255.0) / 255.0
        videos = []
        for s in seeds:
            video = to_uint8(np.concatenate(parts[s])[: spec.num_frames])
            videos.append(fit_video(video, spec.width, spec.height))
        info = {"generation_size": (gw, gh), "clips": clips, "batched": batch, "steps": self.profile.steps,
                "memory_plan": self.plan.label()}
        return GenerationResult(videos=videos, seeds=seeds, audio=[None] * len(seeds), info=info)

    def _call(self, spec: JobSpec, seeds: list[int], index: int, frames: int, gw: int, gh: int,
              starts: list[np.ndarray | None], step: Any) -> np.ndarray:
        """One diffusers call for ``seeds`` (a batch): (B, frames, gh, gw, 3) float in [0, 1]."""
        i2v = starts[0] is not None
        pipe = self.i2v if i2v else self.t2v
        assert pipe is not None
        self._activate(pipe)
        vae = pipe.vae
        channels = vae.config.z_dim
        shape = (channels, (frames - 1) // pipe.vae_scale_factor_temporal + 1,
                 gh // pipe.vae_scale_factor_spatial, gw // pipe.vae_scale_factor_spatial)
        latents = torch.stack([
            torch.randn(shape, generator=torch.Generator("cpu").manual_seed(segment_seed(s, index)))
            for s in seeds
        ])
        kwargs: dict[str, Any] = dict(
            prompt=[spec.positive_prompt] * len(seeds),
            negative_prompt=[spec.negative_prompt or ""] * len(seeds),
            height=gh, width=gw, num_frames=frames,
            num_inference_steps=self.profile.steps,
            guidance_scale=self.profile.guidance_scale,
            latents=latents, output_type="np",
            callback_on_step_end=step,
        )
        if pipe.config.boundary_ratio is not None:
            kwargs["guidance_scale_2"] = self.profile.guidance_scale
        if i2v:
            imgs = np.stack(starts)  # (B, gh, gw, 3) in [0, 1]
            kwargs["image"] = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
        try:
            with torch.inference_mode():
                out = pipe(**kwargs).frames
        finally:
            pipe.maybe_free_model_hooks()
        return np.asarray(out, dtype=np.float32)

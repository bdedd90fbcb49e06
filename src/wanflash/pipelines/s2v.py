"""Audio-to-video with Wan2.2-S2V: the picture moves with the supplied track.

:class:`S2VStage` renders a request that brings an image and ``inputs.audio`` with the S2V
denoiser (:mod:`wanflash.pipelines.s2v_model`), conditioned on the image (reference latents),
the prompt (umT5) and the track (wav2vec2 features, :class:`AudioFeatures`). It follows the
official ``WanS2V.generate`` (Wan-Video/Wan2.2) for one image + audio request:

* the track is resampled to 16 kHz mono and encoded by wav2vec2; every layer's hidden states are
  interpolated from 50 to 30 per second and one vector per video frame is picked (``buckets``);
* the video is made of clips of ``recipe.frames_per_clip`` frames (80 for the released model),
  each denoised with classifier-free guidance (the negative prompt *and* a silenced track on the
  unconditional side) and chained: each clip after the first carries the previous
  ``recipe.motion_frames`` decoded frames, VAE-encoded, as FramePack motion memory; the first clip
  drops the 3 frames that follow the reference (as upstream does);
* unlike upstream, the track's features are shifted by those 3 frames, so output frame *k* is
  driven by the sound at frame *k* and the muxed track (the supplied one, unchanged) lines up.

Guarantees: exactly ``spec.num_frames`` frames of ``spec.width x spec.height`` per result (generated
at an aspect-matched size with sides multiple of 64, at most ``recipe.max_area``, then cover-resized);
one seed per result (noise drawn on the CPU from it); ``on_step(done, total, "denoise")`` after every
step of every clip, raising from it ends the run. Not ported: pose-video driving (pose latents are
zero, as upstream without a pose video), text-to-speech, and requests without an image (the caller
keeps today's muxing path for those).

Weights (``WANFLASH_A2V_WEIGHTS_DIR``, local only): ``transformer/`` (the released S2V
``config.json`` + ``diffusion_pytorch_model*.safetensors``), ``audio_encoder/`` (the
``wav2vec2-large-xlsr-53-english`` directory it ships), and diffusers-format ``vae/`` (Wan2.1 VAE),
``text_encoder/`` + ``tokenizer/`` (umT5-XXL), e.g. copied from ``Wan2.2-I2V-A14B-Diffusers``, which
uses the same VAE and text encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from wanflash.pipelines.base import AudioTrack, GenerationResult, OnStep, no_progress
from wanflash.pipelines.postprocess import fit_image, fit_video, to_uint8
from wanflash.pipelines.wan import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import A2VConfig
    from wanflash.jobs.model import JobSpec

STAGE = "denoise"
FEATURE_RATE = 30  # wav2vec2 features are resampled to this many per second (as trained)
WAV2VEC_RATE = 50  # wav2vec2 hidden states per second of 16 kHz audio
SAMPLE_RATE = 16000
FIRST_CLIP_DROP = 3  # frames after the reference that upstream drops from the first clip
# Upstream's default negative prompt (the model was tuned with it).
NEGATIVE_PROMPT = ("画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，"
                   "字幕，丑陋的，残缺的，多余的手指，"
                   "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
                   "三条腿，背景人很多，倒着走")


@dataclass(frozen=True)
class S2VRecipe:
    """How the stage drives one family of S2V weights."""

    name: str
    fps: int  # the frame rate the model was trained at (the track is read at this rate)
    frames_per_clip: int  # a multiple of 4
    motion_frames: int  # decoded frames carried into the next clip as motion memory
    steps: int
    guidance_scale: float
    flow_shift: float
    max_area: int  # generation pixels per frame, at most
    text_len: int  # prompt tokens


RECIPES = {
    "s2v": S2VRecipe("wan2.2-s2v-14b", fps=16, frames_per_clip=80, motion_frames=73, steps=40,
                     guidance_scale=4.5, flow_shift=3.0, max_area=1280 * 720, text_len=512),
    # Toy: the shortest motion memory the chaining path allows (2 latent frames, FramePack pads the
    # rest with zeros as upstream does), so the VAE, the cost of a CPU run, decodes little beyond the video.
    # Two clips for the shortest request (17 + 20 frames >= 32), so CI runs the chaining path.
    "tiny": S2VRecipe("tiny-s2v", fps=16, frames_per_clip=20, motion_frames=5, steps=2,
                      guidance_scale=4.5, flow_shift=3.0, max_area=64 * 64, text_len=16),
}


def generation_size(width: int, height: int, max_area: int, grid: int = 64) -> tuple[int, int]:
    """(w, h), multiples of ``grid`` (FramePack's 4x memory needs latents divisible by 8), with the
    request's aspect ratio as near as possible and at most ``max_area`` pixels."""
    scale = math.sqrt(max_area / (width * height))
    w = max(grid, int(width * scale) // grid * grid)
    h = max(grid, int(height * scale) // grid * grid)
    return w, h


def to_mono_16k(track: AudioTrack) -> np.ndarray:
    """The track as float32 mono at 16 kHz (what wav2vec2 was trained on)."""
    samples = np.asarray(track.samples, dtype=np.float32)
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    if track.rate == SAMPLE_RATE or mono.size == 0:
        return mono
    n = max(1, int(round(mono.size * SAMPLE_RATE / track.rate)))
    t = torch.from_numpy(mono)[None, None]
    return F.interpolate(t, size=n, mode="linear", align_corners=False)[0, 0].numpy()


class AudioFeatures:
    """wav2vec2 hidden states of a waveform, per video frame (upstream's ``AudioEncoder``)."""

    def __init__(self, extractor: Any, model: torch.nn.Module) -> None:
        self.extractor = extractor  # a Wav2Vec2FeatureExtractor (normalises the waveform)
        self.model = model  # a Wav2Vec2Model (or the .wav2vec2 of a ForCTC checkpoint)

    @torch.no_grad()
    def __call__(self, wave16k: np.ndarray, fps: int) -> torch.Tensor:
        """(layers, 30 per second, dim) float32: every hidden state, resampled 50 -> 30 per second."""
        device = next(self.model.parameters()).device
        values = self.extractor(wave16k, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        out = self.model(values.to(device, next(self.model.parameters()).dtype), output_hidden_states=True)
        feats = torch.cat(out.hidden_states).float()  # layers T dim
        n = int(feats.shape[1] / WAV2VEC_RATE * FEATURE_RATE)
        return F.interpolate(feats.transpose(1, 2), size=n, mode="linear", align_corners=True).transpose(1, 2)

    @staticmethod
    def clip_count(feats: torch.Tensor, fps: int, frames_per_clip: int) -> int:
        """How many clips upstream would render for this track (one more than whole clips fit)."""
        return int(feats.shape[1] / (frames_per_clip * FEATURE_RATE / fps)) + 1

    @staticmethod
    def buckets(feats: torch.Tensor, fps: int, num_frames: int) -> torch.Tensor:
        """(layers, dim, num_frames): the feature nearest to each video frame's start; zeros past the
        track's end."""
        layers, n, dim = feats.shape
        times = np.linspace(0, num_frames / fps, num_frames, endpoint=False)
        idx = np.round(times * FEATURE_RATE).astype(int)
        out = feats.new_zeros(num_frames, layers, dim)
        inside = idx < n
        out[torch.from_numpy(inside)] = feats[:, idx[inside]].transpose(0, 1)
        return out.permute(1, 2, 0)


def clip_plan(num_frames: int, frames_per_clip: int) -> int:
    """Clips needed for ``num_frames`` (the first clip yields ``FIRST_CLIP_DROP`` fewer)."""
    first = frames_per_clip - FIRST_CLIP_DROP
    return 1 + max(0, -(-(num_frames - first) // frames_per_clip))


class S2VStage:
    """Image + track (+ prompt) -> frames with Wan2.2-S2V; see the module docstring."""

    def __init__(self, config: A2VConfig, root: Path, recipe: S2VRecipe, *, device: str = "auto",
                 dtype: str = "auto") -> None:
        self.config = config
        self.root = Path(root)
        self.recipe = recipe
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.parts: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        return self.config.steps or self.recipe.steps

    def load(self) -> None:
        if self.parts is not None:
            return
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
        from transformers import AutoTokenizer, UMT5EncoderModel, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        from wanflash.pipelines.s2v_model import WanS2VTransformer3DModel

        for sub in ("transformer", "audio_encoder", "vae", "text_encoder", "tokenizer"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"S2V weights: {self.root / sub} is missing")
        dev, dt = self.device, self.dtype
        transformer = WanS2VTransformer3DModel.from_pretrained(self.root / "transformer", torch_dtype=dt)
        self.parts = {
            "transformer": transformer.to(dev).eval(),
            # Wan's VAE is numerically fragile in half precision; float32 as upstream advises.
            "vae": AutoencoderKLWan.from_pretrained(self.root / "vae", torch_dtype=torch.float32).to(dev).eval(),
            "text_encoder": UMT5EncoderModel.from_pretrained(self.root / "text_encoder", torch_dtype=dt).to(dev).eval(),
            "tokenizer": AutoTokenizer.from_pretrained(self.root / "tokenizer"),
            "audio": AudioFeatures(Wav2Vec2FeatureExtractor.from_pretrained(self.root / "audio_encoder"),
                                   Wav2Vec2Model.from_pretrained(self.root / "audio_encoder").to(dev).eval()),
            "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=self.recipe.flow_shift, num_train_timesteps=1000),
        }

    # -- pieces

    def _encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean  # the same cleaning as upstream's tokenizer

        assert self.parts is not None
        tok = self.parts["tokenizer"]([prompt_clean(p) for p in prompts], padding="max_length",
                                      max_length=self.recipe.text_len,
                                      truncation=True, add_special_tokens=True, return_attention_mask=True,
                                      return_tensors="pt")
        mask = tok.attention_mask.to(self.device)
        with torch.no_grad():
            emb = self.parts["text_encoder"](tok.input_ids.to(self.device), mask).last_hidden_state
        return emb * mask[..., None].to(emb.dtype)  # zeros past each prompt, as upstream pads

    def _vae_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.parts["vae"]  # type: ignore[index]
        mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=self.device).view(1, -1, 1, 1, 1)
        return mean, std

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, 16, 1 + (F-1)/4, H/8, W/8)."""
        mean, std = self._vae_stats()
        with torch.no_grad():
            lat = self.parts["vae"].encode(video.float()).latent_dist.mode()  # type: ignore[index]
        return (lat - mean) / std

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._vae_stats()
        with torch.no_grad():
            return self.parts["vae"].decode(latents.float() * std + mean).sample.clamp(-1, 1)  # type: ignore[index]

    # -- generation

    def generate(self, spec: JobSpec, image: Image.Image, track: AudioTrack,
                 on_step: OnStep = no_progress) -> GenerationResult:
        if self.parts is None:
            raise RuntimeError("call load() before generate()")
        r = self.recipe
        gw, gh = generation_size(spec.width, spec.height, r.max_area)
        # The model moves at its own rate; other profiles' rates (TI2V-5B: 24) are met by repeating frames.
        model_frames = -(-spec.num_frames * r.fps // spec.fps)
        clips = clip_plan(model_frames, r.frames_per_clip)
        steps = self.steps
        total = steps * clips * len(spec.seeds)
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            on_step(done, total, STAGE)

        audio = self.parts["audio"]
        feats = audio(to_mono_16k(track), r.fps)
        # Shift by the frames the first clip drops so output frame k hears frame k of the track.
        per_frame = audio.buckets(feats, r.fps, clips * r.frames_per_clip)
        per_frame = torch.cat([per_frame[..., :1].expand(-1, -1, FIRST_CLIP_DROP), per_frame], dim=-1)
        per_frame = per_frame.to(self.device)

        start = np.asarray(fit_image(image, gw, gh), dtype=np.float32) / 127.5 - 1.0
        ref_pixels = torch.from_numpy(start).permute(2, 0, 1)[None, :, None].to(self.device)
        ref_latents = self._encode(ref_pixels)
        context = self._encode_prompt([spec.positive_prompt, spec.negative_prompt or NEGATIVE_PROMPT])

        pick = np.minimum(np.arange(spec.num_frames) * r.fps // spec.fps, model_frames - 1)
        videos = [fit_video(self._one(seed, clips, gw, gh, ref_latents, context, per_frame, step)[pick],
                            spec.width, spec.height) for seed in spec.seeds]
        info = {"generation_size": (gw, gh), "clips": clips, "steps": steps,
                "a2v": {"model": r.name, "conditioning": "image+audio+prompt"}}
        return GenerationResult(videos=videos, seeds=list(spec.seeds), audio=[None] * len(videos), info=info)

    def _one(self, seed: int, clips: int, gw: int, gh: int, ref_latents: torch.Tensor,
             context: torch.Tensor, per_frame: torch.Tensor, step: Any) -> np.ndarray:
        """One result's frames (F, gh, gw, 3) uint8 at the model's rate, every clip chained."""
        r = self.recipe
        assert self.parts is not None
        transformer, scheduler = self.parts["transformer"], self.parts["scheduler"]
        lat_motion = (r.motion_frames + 3) // 4
        lat_frames = (r.frames_per_clip + 3 + r.motion_frames) // 4 - lat_motion
        memory = torch.zeros(1, 3, r.motion_frames, gh, gw, device=self.device)  # decoded frames carried over
        motion_latents = self._encode(memory)
        cond = torch.zeros(2, transformer.config.cond_dim or 16, lat_frames, gh // 8, gw // 8, device=self.device)
        refs = ref_latents.expand(2, -1, -1, -1, -1)
        parts: list[np.ndarray] = []
        for k in range(clips):
            gen = torch.Generator("cpu").manual_seed((int(seed) + k) % (1 << 63))
            latents = torch.randn(1, 16, lat_frames, gh // 8, gw // 8, generator=gen).to(self.device)
            audio = per_frame[..., k * r.frames_per_clip:(k + 1) * r.frames_per_clip][None]
            audio = torch.cat([audio, torch.zeros_like(audio)])  # the unconditional side hears silence
            scheduler.set_timesteps(self.steps, device=self.device)
            first = k == 0
            for t in scheduler.timesteps:
                with torch.no_grad():
                    pred = transformer(latents.expand(2, -1, -1, -1, -1), t.expand(2), context, refs,
                                       motion_latents.expand(2, -1, -1, -1, -1), cond, audio,
                                       motion_frames=(r.motion_frames, lat_motion), drop_motion_frames=first)
                cond_pred, uncond_pred = pred.float().chunk(2)
                guided = uncond_pred + r.guidance_scale * (cond_pred - uncond_pred)
                latents = scheduler.step(guided, t, latents, return_dict=False)[0]
                step()
            head = ref_latents if first else motion_latents
            frames = self._decode(torch.cat([head, latents], dim=2))[:, :, -r.frames_per_clip:]
            if first:
                frames = frames[:, :, FIRST_CLIP_DROP:]
            if k + 1 < clips:
                keep = min(r.motion_frames, frames.shape[2])
                memory = torch.cat([memory[:, :, keep:], frames[:, :, -keep:]], dim=2)
                motion_latents = self._encode(memory)
            parts.append((frames[0].permute(1, 2, 3, 0).float().cpu().numpy() + 1.0) / 2.0)
        return to_uint8(np.concatenate(parts))


class AudioDrivenPipeline:
    """A ``VideoPipeline`` whose requests with an image and ``inputs.audio`` are rendered by
    :class:`S2VStage` (the picture follows the track); every other request goes to ``video``
    unchanged. The worker passes the decoded track as ``audio=`` to pipelines with ``hears_audio``;
    the soundtrack muxed into the file is still the supplied track."""

    hears_audio = True

    def __init__(self, video: Any, s2v: S2VStage) -> None:
        self.video = video
        self.s2v = s2v
        self.name = video.name

    def load(self) -> None:
        self.video.load()
        self.s2v.load()

    def generate(self, spec: JobSpec, on_step: OnStep = no_progress, *, image: Image.Image | None = None,
                 audio: AudioTrack | None = None) -> GenerationResult:
        if audio is None or image is None or spec.audio_key is None:
            return self.video.generate(spec, on_step, image=image)
        return self.s2v.generate(spec, image, audio, on_step)

    def __getattr__(self, name: str) -> Any:
        # memory_stats, transformers, text_to_video, ...: the video pipeline's.
        if name == "video":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.video, name)

"""promptExtend: LLM rewriting of the user's prompt, and multi-shot planning.

:func:`create_extender` picks the backend from settings:

* ``none`` (default): the prompt passes through unchanged; the result's ``note`` says so. For
  ``shot_type="multi"`` the deterministic plan from :func:`~wanflash.pipelines.shots.fallback_shot_plan`
  is returned.
* ``local``: a Qwen2.5 (text) or Qwen2.5-VL (sees the input image) Instruct checkpoint loaded with
  ``transformers`` from ``prompt_extend_model_dir``, offline (``local_files_only``), lazily on first use.
* ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, ...) at
  ``prompt_extend_url``; http(s) only, redirects never followed, reply size bounded.

Guarantee: :meth:`PromptExtender.extend` never raises. Any backend failure (load error, HTTP
error, timeout, unusable reply) gives back the original prompt with ``extended=False`` and a
note naming the error class, and is logged. For ``multi`` an unusable shot list falls back to
the deterministic plan, so a multi request always gets a valid plan when its duration allows.

This module imports neither torch nor transformers at import time (the API side imports it).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from wanflash.pipelines.shots import (
    Shot,
    ShotPlanError,
    ShotTransition,
    fallback_shot_plan,
    parse_shot_plan_text,
    validate_shot_plan,
)

if TYPE_CHECKING:
    from PIL import Image

    from wanflash.config import PromptExtendConfig

__all__ = [
    "ExtendResult",
    "LocalExtender",
    "OpenAIExtender",
    "PassthroughExtender",
    "PromptExtender",
    "Shot",
    "ShotTransition",
    "ShotType",
    "create_extender",
]

log = logging.getLogger(__name__)

ShotType = Literal["single", "multi"]

MAX_PROMPT_CHARS = 2000  # umT5 reads 512 tokens; anything longer is noise
SINGLE_MAX_TOKENS = 320
MULTI_MAX_TOKENS = 900
MAX_REPLY_BYTES = 1 << 20
IMAGE_MAX_SIDE = 1024  # enough for a VL model to read the scene; keeps requests small
TEMPERATURE = 0.2


# -- system prompts -----------------------------------------------------------------------------
# Written for this project in the spirit of Wan2.2's official prompt-extension system prompts
# (Wan-Video/Wan2.2, wan/utils/system_prompt.py: I2V_A14B_EN_SYS_PROMPT, I2V_A14B_EMPTY_EN_SYS_PROMPT,
# T2V_A14B_EN_SYS_PROMPT; Apache-2.0): I2V rewriting stresses motion and camera movement and drops
# static description of what the image already shows; T2V rewriting adds a few cinematic
# settings (time, light, shot size, composition) without changing subject or action.

_I2V_SEEN = """You rewrite prompts for an image-to-video model. The image you are given is the first frame of the video. Rewrite the user's prompt into one English paragraph describing what happens in the video.
- Keep the user's subject, actions and any camera movement (e.g. "the camera pans left", "the camera pushes in"); state camera movement explicitly.
- Focus on motion: how the subject moves, step by step, and plausible secondary motion (hair, cloth, water, clouds, leaves).
- Name the main subject briefly from the image (e.g. "dancing" becomes "a girl in a red dress dances"); do not describe static details already visible in the image.
- If the prompt is long, distil the action; if it is short, add plausible motion that fits the image.
- At most 100 words. Output only the rewritten prompt, no preamble, no quotes."""

_I2V_EMPTY = """You write prompts for an image-to-video model. The image you are given is the first frame of the video and the user gave no prompt. Imagine how this scene plausibly comes to life.
- Identify the moving subject from the image and describe its motion step by step, plus plausible secondary motion and, if fitting, a simple camera movement.
- Do not describe static details already visible in the image.
- One English paragraph of at most 100 words. Output only the prompt, no preamble, no quotes."""

_I2V_UNSEEN = """You rewrite prompts for an image-to-video model. The video starts from an input image that is its first frame; you cannot see that image. Rewrite the user's prompt into one English paragraph describing what happens in the video.
- Keep the user's subject, actions and any camera movement exactly; do not invent the subject's appearance, the setting or objects the user did not mention, since they come from the image.
- Focus on motion: how the subject moves, step by step, plausible secondary motion, and camera movement stated explicitly.
- At most 100 words. Output only the rewritten prompt, no preamble, no quotes."""

_T2V = """You are a film director rewriting prompts for a text-to-video model. Rewrite the user's prompt into one vivid, complete English paragraph without changing its subject or action.
- Open with up to four fitting cinematic settings chosen from: time of day (day by default), light source, soft or hard light, light angle, warm/cool colours, shot size (medium or wide by default), camera angle (omit it if the prompt already moves the camera), composition (centre by default).
- Add concrete detail to the subjects the user mentioned (appearance, expression, pose) and to the background; never add subjects that are not in the prompt.
- Describe the motion step by step; if there is none, add natural motion of the subject and background.
- If the prompt names a style (e.g. anime, 2D illustration), put it first and skip the cinematic settings.
- No mood or atmosphere commentary. 60 to 150 words. Output only the rewritten prompt, no preamble, no quotes."""

_MULTI = """You plan multi-shot videos. Split the user's video into {min_shots} to {max_shots} shots whose durations are whole seconds, each at least 1 second, summing to exactly {duration} seconds.
{context}
Each shot has:
- "duration": seconds (integer);
- "prompt": one English paragraph (at most 80 words) describing that shot's motion and camera, self-contained (repeat the subject's description, since each shot is generated separately);
- "transition": "continue" when the shot starts from the last frame of the previous shot (same scene, continuous action), or "cut" for a hard cut to a new angle or scene. The first shot is always "continue".
Answer with JSON only, exactly in this form and nothing else:
{{"shots": [{{"duration": 3, "prompt": "...", "transition": "continue"}}, {{"duration": 2, "prompt": "...", "transition": "cut"}}]}}"""

_MULTI_CONTEXT = {
    "seen": "The image you are given is the first frame of shot 1: build on it, do not re-describe its static details.",
    "unseen": "Shot 1 starts from an input image you cannot see: do not invent the subject's appearance or the setting beyond what the user says.",
    "text": "There is no input image: the first shot is generated from its prompt alone.",
}


def select_system_prompt(
    *, shot_type: ShotType, has_image: bool, image_visible: bool, empty_prompt: bool, duration: int
) -> str | None:
    """The system prompt for this request, or None when there is nothing to extend from
    (empty prompt and no image the model can see)."""
    if empty_prompt and not (has_image and image_visible):
        return None
    if shot_type == "multi":
        key = ("seen" if image_visible else "unseen") if has_image else "text"
        return _MULTI.format(
            min_shots=2, max_shots=min(5, duration), duration=duration, context=_MULTI_CONTEXT[key]
        )
    if has_image:
        if image_visible:
            return _I2V_EMPTY if empty_prompt else _I2V_SEEN
        return _I2V_UNSEEN
    return _T2V


def user_message(prompt: str, *, shot_type: ShotType, duration: int) -> str:
    text = prompt.strip() or "(no prompt: use the image)"
    if shot_type == "multi":
        return f"Total duration: {duration} seconds.\nUser prompt: {text}"
    return text


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtendResult:
    """What the extender did.

    ``prompt`` is the prompt to generate with (the original one when ``extended`` is False).
    For ``multi`` it is a readable summary of the plan; the engine uses ``shots``. ``shots`` is
    None for ``single``. ``note`` says why nothing was extended, or what was repaired.
    """

    prompt: str
    shots: list[Shot] | None
    backend: str
    extended: bool
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "shots": [s.to_dict() for s in self.shots] if self.shots is not None else None,
            "backend": self.backend,
            "extended": self.extended,
            "note": self.note,
        }


def summarise_shots(shots: list[Shot]) -> str:
    return "\n".join(
        f"Shot {i} ({s.duration:g}s, {s.transition}): {s.prompt}" for i, s in enumerate(shots, start=1)
    )


_LABEL = re.compile(r"^\s*(?:\*\*)?(?:rewritten|extended|enhanced|final|improved)?\s*prompt\s*(?:\*\*)?\s*:\s*", re.I)


def clean_single_reply(text: str) -> str:
    """The prompt inside a single-shot reply: code fences, a 'Prompt:' label, surrounding
    quotes and chat-template leftovers removed, whitespace collapsed, length capped."""
    t = text.strip()
    fence = re.fullmatch(r"```[a-zA-Z]*\s*\n?(.*?)\n?```", t, re.DOTALL)
    if fence:
        t = fence.group(1).strip()
    t = re.sub(r"<\|[^|>]{1,40}\|>", " ", t)  # stray special tokens such as <|im_end|>
    t = _LABEL.sub("", t)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'“”":
        t = t[1:-1]
    t = t.strip("“”").strip()
    t = re.sub(r"\s+", " ", t)
    return t[:MAX_PROMPT_CHARS].strip()


class ExtensionUnusable(Exception):
    """The backend answered, but with nothing usable (e.g. an empty reply)."""


# -- extenders ----------------------------------------------------------------------------------


class PromptExtender(ABC):
    """Rewrites prompts; :meth:`extend` never raises."""

    backend: str = "none"
    #: whether the backend's model sees the input image (VL model / endpoint accepting images)
    sees_images: bool = False

    def extend(
        self,
        prompt: str,
        *,
        image: Image.Image | None = None,
        duration: int,
        shot_type: ShotType = "single",
    ) -> ExtendResult:
        try:
            return self._extend(prompt, image=image, duration=duration, shot_type=shot_type)
        except Exception as exc:  # the guarantee: never fail the task for prompt extension
            log.warning("prompt extension (%s) failed: %s: %s", self.backend, type(exc).__name__, exc)
            return self._unextended(
                prompt, duration, shot_type, f"prompt extension failed ({type(exc).__name__}); prompt used as given"
            )

    def _unextended(self, prompt: str, duration: int, shot_type: ShotType, note: str) -> ExtendResult:
        shots: list[Shot] | None = None
        if shot_type == "multi":
            try:
                shots = fallback_shot_plan(prompt, duration)
                note += f"; deterministic {len(shots)}-shot plan reusing the prompt"
            except ShotPlanError as exc:
                note += f"; no multi-shot plan: {exc}"
        return ExtendResult(prompt=prompt, shots=shots, backend=self.backend, extended=False, note=note)

    def _extend(self, prompt: str, *, image: Image.Image | None, duration: int, shot_type: ShotType) -> ExtendResult:
        visible = image is not None and self.sees_images
        system = select_system_prompt(
            shot_type=shot_type,
            has_image=image is not None,
            image_visible=visible,
            empty_prompt=not prompt.strip(),
            duration=duration,
        )
        if system is None:
            return self._unextended(prompt, duration, shot_type, "empty prompt and no image the model can see; nothing to extend")
        if shot_type == "multi" and duration < 2:
            return self._unextended(prompt, duration, shot_type, "duration too short for multi-shot")
        user = user_message(prompt, shot_type=shot_type, duration=duration)
        max_tokens = MULTI_MAX_TOKENS if shot_type == "multi" else SINGLE_MAX_TOKENS
        reply, note = self.complete(system, user, image=image if visible else None, max_tokens=max_tokens)

        if shot_type == "single":
            text = clean_single_reply(reply)
            if not text:
                raise ExtensionUnusable("empty reply")
            return ExtendResult(prompt=text, shots=None, backend=self.backend, extended=True, note=note)

        repairs: list[str] = []
        try:
            shots = validate_shot_plan(parse_shot_plan_text(reply), duration, notes=repairs)
        except ShotPlanError as exc:
            log.warning("prompt extension (%s): unusable shot plan: %s", self.backend, exc)
            return self._unextended(prompt, duration, shot_type, f"backend returned no usable shot plan ({exc})")
        notes = [note] if note else []
        if repairs:
            notes.append("shot plan normalised: " + ", ".join(repairs))
        return ExtendResult(
            prompt=summarise_shots(shots),
            shots=shots,
            backend=self.backend,
            extended=True,
            note="; ".join(notes) or None,
        )

    @abstractmethod
    def complete(
        self, system: str, user: str, *, image: Image.Image | None, max_tokens: int
    ) -> tuple[str, str | None]:
        """One chat completion: (reply text, note or None). May raise; :meth:`extend` catches."""


class PassthroughExtender(PromptExtender):
    """No backend: prompts pass through unchanged, and the note says why."""

    backend = "none"

    def __init__(self, reason: str = "no prompt-extension backend configured") -> None:
        self.reason = reason

    def _extend(self, prompt: str, *, image: Image.Image | None, duration: int, shot_type: ShotType) -> ExtendResult:
        return self._unextended(prompt, duration, shot_type, f"{self.reason}; prompt used as given")

    def complete(self, system: str, user: str, *, image: Image.Image | None, max_tokens: int) -> tuple[str, str | None]:
        raise NotImplementedError("the passthrough extender has no model")


def image_data_uri(image: Image.Image) -> str:
    """The image as a JPEG data URI, longest side at most IMAGE_MAX_SIDE."""
    img = image.convert("RGB")
    if max(img.size) > IMAGE_MAX_SIDE:
        img = img.copy()
        img.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIExtender(PromptExtender):
    """An OpenAI-compatible chat endpoint. The URL is operator-configured, so it is trusted
    as a destination, but only http(s) is accepted and redirects are never followed."""

    backend = "openai"
    sees_images = True  # tried first; a 4xx for an image request retries once without it

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"prompt_extend_url must be an http(s) URL with a host, got {base_url!r}")
        if parts.username or parts.password:
            raise ValueError("prompt_extend_url must not carry credentials; use prompt_extend_api_key")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, headers=headers, transport=transport, trust_env=False
        )

    def close(self) -> None:
        self._client.close()

    def complete(self, system: str, user: str, *, image: Image.Image | None, max_tokens: int) -> tuple[str, str | None]:
        if image is None:
            return self._post(system, user, None, max_tokens), None
        try:
            return self._post(system, user, image_data_uri(image), max_tokens), None
        except httpx.HTTPStatusError as exc:
            # Text-only models behind the endpoint reject image parts with a 4xx: retry once
            # from the text alone, with the prompt that says the image cannot be seen.
            if not 400 <= exc.response.status_code < 500 or exc.response.status_code in (401, 403):
                raise
            log.info("prompt extension endpoint refused the image (%s); retrying text-only", exc.response.status_code)
        unseen = system_for_unseen(system)
        return self._post(unseen, user, None, max_tokens), "endpoint did not accept the image; extended from text only"

    def _post(self, system: str, user: str, data_uri: str | None, max_tokens: int) -> str:
        content: Any = user
        if data_uri is not None:
            content = [{"type": "image_url", "image_url": {"url": data_uri}}, {"type": "text", "text": user}]
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "temperature": TEMPERATURE,
            "max_tokens": max_tokens,
            "stream": False,
        }
        with self._client.stream("POST", self.url, json=body) as resp:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise ExtensionUnusable(f"reply larger than {MAX_REPLY_BYTES} bytes")
                chunks.append(chunk)
            if not resp.is_success:  # 3xx included: redirects are not followed
                raise httpx.HTTPStatusError(f"HTTP {resp.status_code} from {self.url}", request=resp.request, response=resp)
        data = json.loads(b"".join(chunks))
        msg = data["choices"][0]["message"]["content"]
        if isinstance(msg, list):  # content parts
            msg = "".join(p.get("text", "") for p in msg if isinstance(p, dict))
        if not isinstance(msg, str):
            raise ExtensionUnusable("reply has no text content")
        return msg


def system_for_unseen(system: str) -> str:
    """The variant of ``system`` for a model that cannot see the image."""
    if system in (_I2V_SEEN, _I2V_EMPTY):
        return _I2V_UNSEEN
    return system.replace(_MULTI_CONTEXT["seen"], _MULTI_CONTEXT["unseen"])


@dataclass
class _LocalModel:
    model: Any
    tokenizer: Any  # a tokenizer, or a processor for VL models
    is_vl: bool
    device: str


class LocalExtender(PromptExtender):
    """A local Qwen2.5 / Qwen2.5-VL Instruct checkpoint through transformers, loaded offline
    and lazily on first use. A load failure is remembered, so later tasks pass through at once
    instead of retrying an expensive load."""

    backend = "local"

    def __init__(self, model_dir: Path | str, *, device: str = "auto", max_new_tokens: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.max_new_tokens = max_new_tokens  # optional cap below the per-mode budget (slow hardware, tests)
        self._lock = threading.Lock()
        self._loaded: _LocalModel | None = None
        self._load_error: BaseException | None = None

    @property
    def sees_images(self) -> bool:  # type: ignore[override]
        # Known only after loading; loading here keeps select_system_prompt honest.
        return self._load().is_vl

    def _load(self) -> _LocalModel:
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            if self._load_error is not None:
                raise RuntimeError(f"local prompt-extension model failed to load earlier: {self._load_error!r}")
            try:
                self._loaded = self._load_now()
            except BaseException as exc:
                self._load_error = exc
                raise
            return self._loaded

    def _load_now(self) -> _LocalModel:
        import torch
        import transformers

        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"prompt_extend_model_dir {self.model_dir} is not a directory")
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        config = transformers.AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        is_vl = getattr(config, "vision_config", None) is not None
        if is_vl:
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                self.model_dir, local_files_only=True, dtype=dtype
            )
            try:
                processor = transformers.AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
            except (ImportError, OSError, ValueError) as exc:
                # Qwen2.5-VL's processor needs torchvision (for its video processor) and the
                # preprocessor files; without them the model still rewrites from text alone.
                log.warning("prompt extension: no processor for %s (%s: %s); using it text-only",
                            self.model_dir, type(exc).__name__, exc)
                processor = transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                is_vl = False
        else:
            processor = transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(self.model_dir, local_files_only=True, dtype=dtype)
        model.to(device).eval()
        log.info("prompt extension: loaded %s (%s) on %s", self.model_dir, "VL" if is_vl else "text", device)
        return _LocalModel(model=model, tokenizer=processor, is_vl=is_vl, device=device)

    def complete(self, system: str, user: str, *, image: Image.Image | None, max_tokens: int) -> tuple[str, str | None]:
        import torch

        lm = self._load()
        if lm.is_vl:
            user_content: list[dict[str, Any]] = [{"type": "text", "text": user}]
            if image is not None:
                user_content.insert(0, {"type": "image", "image": image.convert("RGB")})
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": [{"type": "text", "text": system}]},
                {"role": "user", "content": user_content},
            ]
        else:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        inputs = lm.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        inputs = {k: v.to(lm.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[-1]
        with self._lock, torch.inference_mode():  # one generation at a time per model
            out = lm.model.generate(**inputs, max_new_tokens=min(max_tokens, self.max_new_tokens or max_tokens), do_sample=False)
        text = lm.tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)
        return str(text), None


def create_extender(config: PromptExtendConfig, *, transport: httpx.BaseTransport | None = None) -> PromptExtender:
    """The extender ``settings`` ask for. A misconfigured backend (missing URL or directory,
    bad scheme) is logged and becomes a passthrough whose note says why: never an exception."""
    backend = config.backend
    if backend == "local":
        if config.model_dir is None:
            return _misconfigured("local", "prompt_extend_model_dir is not set")
        return LocalExtender(config.model_dir, device=config.device)
    if backend == "openai":
        if not config.url:
            return _misconfigured("openai", "prompt_extend_url is not set")
        try:
            return OpenAIExtender(
                config.url,
                model=config.model,
                api_key=config.api_key,
                timeout_s=config.timeout_s,
                transport=transport,
            )
        except ValueError as exc:
            return _misconfigured("openai", str(exc))
    return PassthroughExtender()


def _misconfigured(backend: str, why: str) -> PassthroughExtender:
    log.error("prompt extension backend %r disabled: %s", backend, why)
    return PassthroughExtender(f"prompt-extension backend {backend!r} misconfigured ({why})")

"""promptExtend backends: passthrough, a tiny local causal LM, and a loopback OpenAI-compatible
endpoint. The contract under test: extend() never raises, says what it did, and a multi
request always gets a valid shot plan."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from wanflash.config import PromptExtendConfig, Settings
from wanflash.pipelines.prompt_extend import (
    ExtendResult,
    LocalExtender,
    OpenAIExtender,
    PassthroughExtender,
    clean_single_reply,
    create_extender,
)
from wanflash.pipelines.shots import shot_frame_counts, shot_plan_problems


def _config(**kw: Any) -> PromptExtendConfig:
    return Settings(_env_file=None, **kw).prompt_extend


def _image() -> Image.Image:
    img = Image.new("RGB", (1600, 900), (20, 120, 200))
    img.paste((250, 200, 10), (700, 300, 900, 500))
    return img


def _assert_valid_multi(r: ExtendResult, duration: int) -> None:
    assert r.shots is not None
    assert shot_plan_problems(r.shots, duration) == []
    assert sum(shot_frame_counts(r.shots, 16, duration * 16)) == duration * 16


# -- passthrough --------------------------------------------------------------------------------


def test_default_backend_is_passthrough() -> None:
    ext = create_extender(_config())
    assert isinstance(ext, PassthroughExtender)
    r = ext.extend("a cat walks", image=_image(), duration=5, shot_type="single")
    assert r == ExtendResult("a cat walks", None, "none", False, r.note)
    assert r.note and "no prompt-extension backend configured" in r.note


@pytest.mark.parametrize("duration", [2, 5, 10, 15])
def test_passthrough_multi_gives_the_deterministic_plan(duration: int) -> None:
    r = create_extender(_config()).extend("a cat walks", image=None, duration=duration, shot_type="multi")
    assert r.extended is False and r.prompt == "a cat walks"
    assert r.note and "deterministic" in r.note
    _assert_valid_multi(r, duration)
    assert all(s.prompt == "a cat walks" for s in r.shots or [])


@pytest.mark.parametrize(
    "kw",
    [
        {"prompt_extend_backend": "local"},
        {"prompt_extend_backend": "openai"},
        {"prompt_extend_backend": "openai", "prompt_extend_url": "file:///etc/passwd"},
        {"prompt_extend_backend": "openai", "prompt_extend_url": "ftp://127.0.0.1/v1"},
        {"prompt_extend_backend": "openai", "prompt_extend_url": "http://user:pw@127.0.0.1/v1"},
    ],
)
def test_misconfigured_backend_passes_through_and_says_why(kw: dict[str, Any]) -> None:
    ext = create_extender(_config(**kw))
    assert isinstance(ext, PassthroughExtender)
    r = ext.extend("p", image=None, duration=5)
    assert r.extended is False and r.prompt == "p" and r.note and "misconfigured" in r.note


def test_local_backend_with_missing_dir_never_raises(tmp_path: Path) -> None:
    ext = create_extender(_config(prompt_extend_backend="local", prompt_extend_model_dir=tmp_path / "nope"))
    assert isinstance(ext, LocalExtender)
    for _ in range(2):  # the second call hits the remembered load error
        r = ext.extend("a cat", image=None, duration=4, shot_type="multi")
        assert r.extended is False and r.prompt == "a cat" and r.backend == "local"
        assert r.note and ("FileNotFoundError" in r.note or "RuntimeError" in r.note)
        _assert_valid_multi(r, 4)


def test_clean_single_reply() -> None:
    assert clean_single_reply('```\nRewritten prompt: "A cat walks left."\n```') == "A cat walks left."
    assert clean_single_reply("  A cat\n walks. <|im_end|>") == "A cat walks."
    assert clean_single_reply("x" * 5000) == "x" * 2000


# -- local backend: a tiny random Qwen2 built from a config, saved and loaded offline ------------

_WORDS = [
    "<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant",
    "{", "}", "[", "]", ":", ",", '"', ".", "shots", "duration", "prompt", "transition",
    "continue", "cut", "1", "2", "3", "a", "cat", "walks", "the", "camera", "pans", "left",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {w: i for i, w in enumerate(_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )  # fmt: skip
    fast.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(_WORDS), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=vocab["<|im_end|>"], pad_token_id=0,
    )  # fmt: skip
    d = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def _local(d: Path) -> LocalExtender:
    ext = create_extender(
        _config(prompt_extend_backend="local", prompt_extend_model_dir=d, prompt_extend_device="cpu")
    )
    assert isinstance(ext, LocalExtender)
    ext.max_new_tokens = 24  # random weights: keep generation short
    return ext


def test_local_backend_single_runs_offline(tiny_lm_dir: Path) -> None:
    ext = _local(tiny_lm_dir)
    r = ext.extend("a cat walks", image=None, duration=5, shot_type="single")
    assert r.backend == "local" and r.shots is None and isinstance(r.prompt, str)
    # random weights: the text is gibberish, but the contract holds either way
    if r.extended:
        assert r.prompt and r.note is None
    else:
        assert r.prompt == "a cat walks" and r.note
    assert ext.sees_images is False  # a text model: the image cannot be shown to it
    r2 = ext.extend("a cat walks", image=_image(), duration=5, shot_type="single")
    assert r2.backend == "local" and isinstance(r2.prompt, str)


def test_local_backend_multi_falls_back_on_gibberish(tiny_lm_dir: Path) -> None:
    r = _local(tiny_lm_dir).extend("a cat walks", image=_image(), duration=7, shot_type="multi")
    assert r.backend == "local" and r.extended is False and r.prompt == "a cat walks"
    assert r.note and "no usable shot plan" in r.note and "deterministic" in r.note
    _assert_valid_multi(r, 7)


def test_local_empty_prompt_with_unseen_image_passes_through(tiny_lm_dir: Path) -> None:
    r = _local(tiny_lm_dir).extend("", image=_image(), duration=5)
    assert r.extended is False and r.prompt == "" and r.note and "nothing to extend" in r.note


def test_local_vl_model_without_processor_runs_text_only(tiny_lm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Qwen2.5-VL checkpoint whose processor cannot load (no preprocessor files here; in real
    deployments torchvision missing) is still used, from text alone, with the unseen-image prompt."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    src = PreTrainedTokenizerFast.from_pretrained(tiny_lm_dir, local_files_only=True)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(_WORDS), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
            eos_token_id=3, pad_token_id=0, bos_token_id=None,
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=37, num_heads=4, out_hidden_size=32, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0],
        ),
        image_token_id=1, video_token_id=1, vision_start_token_id=1, vision_end_token_id=1,
        eos_token_id=3, pad_token_id=0, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(tmp_path)
    src.save_pretrained(tmp_path)
    ext = _local(tmp_path)
    with caplog.at_level("WARNING", logger="wanflash.pipelines.prompt_extend"):
        r = ext.extend("a cat walks", image=_image(), duration=5)
    assert r.backend == "local" and isinstance(r.prompt, str)
    assert ext.sees_images is False
    assert any("text-only" in rec.getMessage() for rec in caplog.records)


# -- openai backend: a loopback fake endpoint ----------------------------------------------------


@dataclass
class FakeLLM:
    mode: str = "ok"  # ok | 500 | slow | redirect | reject_image | garbage
    reply: str = "A cat walks to the left as the camera pans."
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state = FakeLLM()

    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        content = body["messages"][-1]["content"]
        has_image = isinstance(content, list) and any(p.get("type") == "image_url" for p in content)
        if state.mode == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if state.mode == "slow":
            await asyncio.sleep(1.5)
        if state.mode == "redirect":
            return Response(status_code=307, headers={"location": "http://127.0.0.1:9/elsewhere"})
        if state.mode == "reject_image" and has_image:
            return JSONResponse({"error": "this model does not accept images"}, status_code=400)
        if state.mode == "garbage":
            return Response(b"not json", media_type="text/plain")
        return JSONResponse(
            {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": state.reply}}]}
        )

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):  # bounded wait for startup
        if server.started:
            break
        time.sleep(0.025)
    assert server.started
    state.url = f"http://127.0.0.1:{port}/v1"
    yield state
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.mode = "ok"
    fake_llm.reply = "A cat walks to the left as the camera pans."
    fake_llm.requests.clear()
    fake_llm.headers.clear()
    return fake_llm


def _openai(llm: FakeLLM, **kw: Any) -> OpenAIExtender:
    s = _config(prompt_extend_backend="openai", prompt_extend_url=llm.url, **kw)
    ext = create_extender(s)
    assert isinstance(ext, OpenAIExtender)
    return ext


def test_openai_single_returns_the_rewritten_prompt(llm: FakeLLM) -> None:
    llm.reply = '"A cat walks slowly to the left; the camera pans with it."'
    r = _openai(llm, prompt_extend_api_key="sk-test", prompt_extend_model="m1").extend(
        "cat walks", image=None, duration=5
    )
    assert r == ExtendResult("A cat walks slowly to the left; the camera pans with it.", None, "openai", True, None)
    (req,) = llm.requests
    assert req["model"] == "m1" and req["temperature"] <= 0.3 and 0 < req["max_tokens"] <= 1024
    assert req["messages"][0]["role"] == "system" and req["messages"][1]["content"] == "cat walks"
    assert "text-to-video" in req["messages"][0]["content"]
    assert llm.headers[0]["authorization"] == "Bearer sk-test"


def test_openai_sends_the_image_as_a_data_uri(llm: FakeLLM) -> None:
    r = _openai(llm).extend("the cat jumps", image=_image(), duration=5)
    assert r.extended is True and r.note is None
    (req,) = llm.requests
    parts = req["messages"][1]["content"]
    (img_part,) = [p for p in parts if p["type"] == "image_url"]
    uri = img_part["image_url"]["url"]
    assert uri.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(img.size) <= 1024 and img.size[0] > img.size[1]
    assert {"type": "text", "text": "the cat jumps"} in parts
    assert "first frame" in req["messages"][0]["content"]


def test_openai_text_only_model_is_retried_without_the_image(llm: FakeLLM) -> None:
    llm.mode = "reject_image"
    r = _openai(llm).extend("the cat jumps", image=_image(), duration=5)
    assert r.extended is True and r.note and "text only" in r.note
    assert len(llm.requests) == 2 and llm.requests[1]["messages"][1]["content"] == "the cat jumps"
    assert "cannot see" in llm.requests[1]["messages"][0]["content"]


def _plan(*shots: tuple[Any, str, str]) -> str:
    return json.dumps({"shots": [{"duration": d, "prompt": p, "transition": t} for d, p, t in shots]})


def test_openai_multi_valid_plan(llm: FakeLLM) -> None:
    llm.reply = _plan((4, "The cat stalks forward.", "continue"), (3, "Close-up: the cat pounces.", "cut"), (3, "The cat lands.", "continue"))
    r = _openai(llm).extend("a cat hunts", image=_image(), duration=10, shot_type="multi")
    assert r.extended is True and r.note is None and r.backend == "openai"
    assert [(s.duration, s.transition) for s in r.shots or []] == [(4, "continue"), (3, "cut"), (3, "continue")]
    assert "Shot 2 (3s, cut): Close-up: the cat pounces." in r.prompt
    _assert_valid_multi(r, 10)
    req = llm.requests[0]
    assert "10 seconds" in req["messages"][0]["content"] and "Total duration: 10 seconds" in req["messages"][1]["content"][-1]["text"]


@pytest.mark.parametrize(
    ("reply", "expect"),
    [
        (_plan((3, "a", "continue"), (3, "b", "cut")), "rescaled"),  # sum 6 != 10
        (_plan(*[(2, f"s{i}", "cut") for i in range(7)]), "cut to 5"),  # 7 shots
        (_plan((-3, "a", "cut"), (5, "b", "continue"), (0, "c", "cut")), "filled"),  # non-positive durations
        ("Here you go!\n" + _plan((5, "a", "continue"), (5, "b", "cut")) + "\nHope it helps.", None),  # prose
        ("```json\n" + _plan((6, "a", "continue"), (4, "b", "cut")) + "\n```", None),  # code fence
        ("```\n" + _plan((6, "a", "cut"), (4, "b", "cut")) + "\n```", "first shot"),
    ],
)
def test_openai_multi_imperfect_plans_are_normalised(llm: FakeLLM, reply: str, expect: str | None) -> None:
    llm.reply = reply
    r = _openai(llm).extend("a cat hunts", image=None, duration=10, shot_type="multi")
    assert r.extended is True
    _assert_valid_multi(r, 10)
    if expect is None:
        assert r.note is None
    else:
        assert r.note and "normalised" in r.note and expect in r.note


@pytest.mark.parametrize(
    "reply",
    [
        "I cannot plan shots for this.",
        _plan((5, "only one shot", "continue")),
        '{"shots": "two shots please"}',
        _plan((3, "", "continue"), (3, "   ", "cut")),
    ],
)
def test_openai_multi_unusable_plan_falls_back(llm: FakeLLM, reply: str) -> None:
    llm.reply = reply
    r = _openai(llm).extend("a cat hunts", image=None, duration=6, shot_type="multi")
    assert r.extended is False and r.prompt == "a cat hunts"
    assert r.note and "no usable shot plan" in r.note and "deterministic" in r.note
    _assert_valid_multi(r, 6)


@pytest.mark.parametrize(("mode", "error"), [("500", "HTTPStatusError"), ("redirect", "HTTPStatusError"), ("garbage", "JSONDecodeError")])
@pytest.mark.parametrize("shot_type", ["single", "multi"])
def test_openai_errors_pass_through(
    llm: FakeLLM, mode: str, error: str, shot_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm.mode = mode
    with caplog.at_level("WARNING", logger="wanflash.pipelines.prompt_extend"):
        r = _openai(llm).extend("a cat", image=_image(), duration=5, shot_type=shot_type)  # type: ignore[arg-type]
    assert any(error in rec.getMessage() for rec in caplog.records)  # logged, not raised
    assert r.extended is False and r.prompt == "a cat" and r.backend == "openai"
    assert r.note and error in r.note
    assert len(llm.requests) == 1  # no retry on 5xx, no redirect followed
    if shot_type == "multi":
        _assert_valid_multi(r, 5)


def test_openai_timeout_passes_through(llm: FakeLLM) -> None:
    llm.mode = "slow"
    t0 = time.monotonic()
    r = _openai(llm, prompt_extend_timeout_s=0.3).extend("a cat", image=None, duration=5)
    assert time.monotonic() - t0 < 1.4
    assert r.extended is False and r.prompt == "a cat" and r.note and "ReadTimeout" in r.note


def test_openai_unreachable_passes_through() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    ext = create_extender(_config(prompt_extend_backend="openai", prompt_extend_url=f"http://127.0.0.1:{port}/v1"))
    r = ext.extend("a cat", image=None, duration=5)
    assert r.extended is False and r.note and "ConnectError" in r.note


# -- SDKs ignore an extra result field ------------------------------------------------------------



"""The embedded ``tiny`` model: a random-weight Wan2.2-A14B-style pipeline built offline.

Its output is noise. It exists so the whole service (validation, queue, engine, encoding,
delivery) runs on any CPU in seconds without downloading anything: there are no hub calls,
and the tokenizer is a local ``tokenizers`` WordLevel model instead of umT5's SentencePiece.

:func:`ensure_tiny_model` builds it once, seeded (the same bytes on every machine with the
same library versions), and saves it with ``save_pretrained`` in the layout the real
profiles use, so it is loaded back through exactly the same ``from_pretrained`` path:

* ``<root>/``     a ``WanImageToVideoPipeline`` (two experts + ``boundary_ratio``, no CLIP);
* ``<root>/t2v/`` a ``WanPipeline`` whose transformers take 16 input channels (text-to-video
  has no image condition, so it cannot reuse the 36-channel I2V experts).

Why A14B-style rather than TI2V-5B-style: it exercises the two-expert path (high/low-noise
switch at ``boundary_ratio``, LoRA loading into both experts) that the quality profile
needs, and its 16-pixel grid matches the ``tiny`` profile. The build writes to a temporary
directory and renames it into place, so a crash never leaves a half model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Bump when the recipe changes: an existing tiny model with another version is rebuilt.
TINY_VERSION = 1
MARKER = "wanflash-tiny.json"
SEED = 20260101
BOUNDARY_RATIO = 0.875

_WORDS = (
    "a an the of and in on with at to from by is are this that it its "
    "man woman person people child dog cat bird horse car city street forest sea sky sun night "
    "walks runs dances flies smiles looks turns camera slowly fast red blue green white black "
    "light dark beautiful cinematic video scene low quality blurry worst static"
).split()


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>"] + _WORDS
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _transformer(in_channels: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def build_tiny_pipelines():
    """Fresh tiny (I2V, T2V) pipelines sharing text encoder, tokenizer, VAE and scheduler."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=5,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    ).eval()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    i2v = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        transformer=_transformer(36).eval(), transformer_2=_transformer(36).eval(),
        boundary_ratio=BOUNDARY_RATIO,
    )
    t2v = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        transformer=_transformer(16).eval(), transformer_2=_transformer(16).eval(),
        boundary_ratio=BOUNDARY_RATIO,
    )
    return i2v, t2v


def _is_current(root: Path, version: int = TINY_VERSION) -> bool:
    try:
        return json.loads((root / MARKER).read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def tiny_model_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / "tiny-wan"


def is_built(data_dir: Path) -> bool:
    """Whether the current tiny model is already on disk (``ensure_tiny_model`` would not build)."""
    return _is_current(tiny_model_dir(data_dir))


def build_once(data_dir: Path, name: str, version: int, steps: Sequence[Callable[[Path], None]], *,
               desc: str, progress: bool | None = None) -> Path:
    """``data_dir/models/<name>``, made by running ``steps`` on a temporary directory first if missing
    or of another ``version``.

    The temporary directory is renamed into place only when every step has returned, so a crash never
    leaves a half model behind, and two processes building at once both end up with a whole one.
    ``progress``: one bar on stderr over the steps (``None``: only on a terminal).
    """
    from diffusers.utils import logging as diffusers_logging
    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    models = Path(data_dir) / "models"
    root = models / name
    if _is_current(root, version):
        return root
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models))
    bar = tqdm(total=len(steps), desc=desc, unit="part", disable=None if progress is None else not progress)
    diffusers_logging.disable_progress_bar()  # one bar for the build, not one per saved shard
    transformers_logging.disable_progress_bar()
    try:
        for step in steps:
            step(tmp)
            bar.update()
        (tmp / MARKER).write_text(json.dumps({"version": version, "seed": SEED,
                                              "note": "random weights: output is noise"}))
        if root.exists():
            # Stale recipe: move it aside first so the rename below is atomic.
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=models))
            os.replace(root, old / name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process finished first; theirs is as good as ours.
            if not _is_current(root, version):
                raise
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_tiny_model(data_dir: Path, *, progress: bool | None = None) -> Path:
    """The tiny model's directory under ``data_dir/models``, built first if missing or stale.

    ``progress``: show a progress bar on stderr while building (``None``: only on a terminal).
    """
    built: list[Any] = []
    return build_once(data_dir, "tiny-wan", TINY_VERSION, [
        lambda tmp: built.extend(build_tiny_pipelines()),
        lambda tmp: built[0].save_pretrained(tmp),
        lambda tmp: built[1].save_pretrained(tmp / "t2v"),
    ], desc="building the tiny model", progress=progress)

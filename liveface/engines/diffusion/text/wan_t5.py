"""umT5 from the official Wan files: ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's own module layout)
plus the ``google/umt5-xxl`` tokenizer folder, run by ``transformers``' ``UMT5EncoderModel``.

Wan's encoder and transformers' umT5 compute the same function (pre-norm RMS layers, per-layer
relative position buckets, gated-GELU feed-forward, no attention scaling); only the names differ.
:func:`wan_to_transformers_key` maps them:

==============================================  ================================================
Wan                                             transformers ``UMT5EncoderModel``
==============================================  ================================================
``token_embedding.weight``                      ``shared.weight`` (= ``encoder.embed_tokens``)
``blocks.{i}.norm1.weight``                     ``encoder.block.{i}.layer.0.layer_norm.weight``
``blocks.{i}.attn.{q,k,v,o}.weight``            ``encoder.block.{i}.layer.0.SelfAttention.*``
``blocks.{i}.pos_embedding.embedding.weight``   ``....SelfAttention.relative_attention_bias``
``blocks.{i}.norm2.weight``                     ``encoder.block.{i}.layer.1.layer_norm.weight``
``blocks.{i}.ffn.gate.0`` / ``fc1`` / ``fc2``   ``....DenseReluDense.wi_0`` / ``wi_1`` / ``wo``
``norm.weight``                                 ``encoder.final_layer_norm.weight``
==============================================  ================================================

The model's shape is read from the tensors, so the same code loads a tiny test file.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch

from liveface.engines.diffusion.checkpoint.files import load_state_dict
from liveface.engines.diffusion.text.encoders import DEFAULT_TEXT_LEN, UMT5TextEncoder
from liveface.errors import CheckpointError

_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}


def wan_to_transformers_key(key: str) -> str:
    """transformers name of a Wan umT5 encoder key; unknown keys raise :class:`KeyError`."""
    if key in _TOP:
        return _TOP[key]
    parts = key.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in _BLOCK:
        return f"encoder.block.{parts[1]}.{_BLOCK[parts[2]]}"
    raise KeyError(key)


def umt5_config(state: Mapping[str, torch.Tensor]) -> Any:
    """The ``UMT5Config`` of a Wan-layout encoder state dict."""
    import transformers as tf

    try:
        vocab, dim = state["token_embedding.weight"].shape
        layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
        inner = state["blocks.0.attn.q.weight"].shape[0]
        ffn = state["blocks.0.ffn.fc1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"not a Wan umT5 encoder state dict (lacks {e})") from e
    return tf.UMT5Config(
        vocab_size=int(vocab), d_model=int(dim), d_kv=int(inner) // int(heads), d_ff=int(ffn),
        num_layers=layers, num_heads=int(heads), relative_attention_num_buckets=int(buckets),
        relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        is_encoder_decoder=False, use_cache=False,
    )  # fmt: skip


def clean_prompt(text: str) -> str:
    """The official prompt cleaning without ``ftfy``: HTML entities unescaped twice, whitespace
    collapsed (``ftfy.fix_text`` only changes mis-decoded text)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


def load_wan_umt5(
    weights: str | Path,
    tokenizer: str | Path | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_length: int = DEFAULT_TEXT_LEN,
) -> UMT5TextEncoder:
    """Load the official encoder file (and tokenizer folder) into a :class:`UMT5TextEncoder`.

    Raises:
        CheckpointError: a missing or damaged file, a renamed or missing key (named).
    """
    import transformers as tf

    path = Path(weights).expanduser()
    state = load_state_dict(path)
    config = umt5_config(state)
    unknown = []
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        try:
            mapped[wan_to_transformers_key(key)] = value.to(dtype)
        except KeyError:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{path}: unexpected umT5 keys {', '.join(sorted(unknown)[:12])}")
    mapped["encoder.embed_tokens.weight"] = mapped["shared.weight"]
    with torch.device("meta"):
        model = tf.UMT5EncoderModel(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(mapped))
    if missing:
        raise CheckpointError(f"{path} lacks umT5 weights: {', '.join(missing[:12])}")
    model.load_state_dict(mapped, strict=True, assign=True)
    model = cast(Any, model).to(device).eval().requires_grad_(False)
    tok = None
    if tokenizer is not None:
        tp = Path(tokenizer).expanduser()
        try:
            tok = tf.AutoTokenizer.from_pretrained(str(tp), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the umT5 tokenizer from {tp} ({e})") from e
    encoder = UMT5TextEncoder(model, tok, max_length)
    encoder.clean = clean_prompt
    return encoder

"""Prompt embeddings for the DiT's cross-attention, computed once per session.

Two sources, both local:

- a safetensors file of precomputed embeddings, ``name -> (tokens, text_dim)`` (no text encoder in
  memory: the usual deployment, with a handful of fixed prompts and the negative prompt);
- the umT5 encoder through ``transformers`` (``UMT5EncoderModel`` + tokenizer) from a local
  directory, as in the diffusers Wan layout (``text_encoder/`` and ``tokenizer/``).

Embeddings are returned trimmed to the prompt's real tokens (with the end-of-sequence token); the
DiT zero-pads them to its ``text_len``, as the official pipeline does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from liveface.engines.diffusion.quiet import quiet_transformers
from liveface.errors import CheckpointError, ConfigError

#: Tokens the official pipeline gives the text encoder.
DEFAULT_TEXT_LEN = 512


def save_text_embeddings(path: str | Path, embeddings: Mapping[str, torch.Tensor]) -> None:
    """Write ``name -> (tokens, text_dim)`` embeddings to a safetensors file."""
    from safetensors.torch import save_file

    bad = [k for k, v in embeddings.items() if v.dim() != 2]
    if bad:
        raise ValueError(f"embeddings must be (tokens, text_dim); not so for {', '.join(bad)}")
    save_file({k: v.detach().contiguous().cpu() for k, v in embeddings.items()}, str(path))


class PrecomputedTextEmbeddings:
    """Named prompt embeddings read from a safetensors file."""

    def __init__(self, embeddings: Mapping[str, torch.Tensor], text_dim: int | None = None) -> None:
        for name, value in embeddings.items():
            if value.dim() != 2 or (text_dim is not None and value.shape[1] != text_dim):
                raise CheckpointError(
                    f"text embedding {name!r} has shape {tuple(value.shape)}; expected "
                    f"(tokens, {text_dim if text_dim is not None else 'text_dim'})"
                )
        self._embeddings = dict(embeddings)

    @classmethod
    def load(cls, path: str | Path, *, text_dim: int | None = None) -> PrecomputedTextEmbeddings:
        """Read a file written by :func:`save_text_embeddings` (or any ``name -> 2-D`` file)."""
        from liveface.engines.diffusion.checkpoint.files import load_state_dict

        return cls(load_state_dict(path), text_dim=text_dim)

    @property
    def names(self) -> list[str]:
        return sorted(self._embeddings)

    def get(self, name: str) -> torch.Tensor:
        """The embedding ``(tokens, text_dim)`` stored under ``name``."""
        try:
            return self._embeddings[name]
        except KeyError:
            raise ConfigError(
                f"no precomputed text embedding named {name!r}; available: "
                f"{', '.join(self.names) or 'none'}"
            ) from None


class UMT5TextEncoder:
    """umT5 encoder + tokenizer loaded with ``transformers`` from a local directory.

    Args of :meth:`from_pretrained`: ``encoder_path`` holds ``config.json`` + weights of a
    ``UMT5EncoderModel`` (or a full umT5, whose decoder is ignored); ``tokenizer_path`` (default:
    the same directory) holds the tokenizer files. The tokenizer is optional: without one, use
    :meth:`encode_ids`.
    """

    def __init__(self, model: Any, tokenizer: Any | None, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        #: Prompt clean-up before tokenizing (the official pipelines collapse whitespace).
        self.clean: Callable[[str], str] = lambda text: " ".join(text.split())

    @classmethod
    def from_pretrained(
        cls,
        encoder_path: str | Path,
        tokenizer_path: str | Path | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        max_length: int = DEFAULT_TEXT_LEN,
        load_tokenizer: bool = True,
    ) -> UMT5TextEncoder:
        import transformers as tf

        p = Path(encoder_path).expanduser()
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p} holds no config.json of a umT5 encoder")
        try:
            with quiet_transformers():
                loaded: Any = tf.UMT5EncoderModel.from_pretrained(
                    str(p), local_files_only=True, output_loading_info=True, dtype=dtype
                )
            model, info = loaded
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the umT5 encoder from {p} ({e})") from e
        missing = sorted(str(k) for k in info.get("missing_keys") or ())
        if missing:
            raise CheckpointError(f"umT5 encoder {p} lacks weights: {', '.join(missing[:12])}")
        tokenizer = None
        if load_tokenizer:
            tp = Path(tokenizer_path).expanduser() if tokenizer_path is not None else p
            try:
                tokenizer = tf.AutoTokenizer.from_pretrained(str(tp), local_files_only=True)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"cannot load the umT5 tokenizer from {tp} ({e})") from e
        return cls(model.to(device).eval().requires_grad_(False), tokenizer, max_length)

    @torch.no_grad()
    def encode_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Encode token ids.

        Args:
            input_ids, attention_mask: ``(batch, tokens)``.

        Returns:
            One ``(real_tokens_i, d_model)`` embedding per prompt, padding removed.
        """
        device = next(self.model.parameters()).device
        mask = attention_mask.to(device)
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask).last_hidden_state
        lengths = mask.sum(dim=1).tolist()
        return [u[: int(n)] for u, n in zip(out, lengths, strict=True)]

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Tokenize (to at most ``max_length`` tokens, with end-of-sequence) and encode prompts."""
        if self.tokenizer is None:
            raise ConfigError("this text encoder was loaded without a tokenizer; use encode_ids")
        batch = self.tokenizer(
            [self.clean(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return self.encode_ids(batch["input_ids"], batch["attention_mask"])

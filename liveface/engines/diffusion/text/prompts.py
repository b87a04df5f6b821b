"""Prompt strings -> text embeddings: looked up in precomputed embeddings, else encoded by umT5."""

from __future__ import annotations

import threading

import torch

from liveface.engines.diffusion.text.encoders import PrecomputedTextEmbeddings, UMT5TextEncoder
from liveface.errors import BadInputError, ConfigError


class PromptBank:
    """Where a session's prompt embedding comes from.

    Args:
        embeddings: named precomputed embeddings (looked up first).
        encoder: a umT5 encoder for prompts that are not in ``embeddings``.
        default: the name used when a session gives no prompt.
    """

    def __init__(
        self,
        embeddings: PrecomputedTextEmbeddings | None,
        encoder: UMT5TextEncoder | None,
        default: str,
    ) -> None:
        if embeddings is None and encoder is None:
            raise ConfigError("prompts need precomputed text embeddings or a umT5 text encoder")
        if encoder is None and embeddings is not None and default not in embeddings.names:
            raise ConfigError(
                f"default prompt {default!r} is not among the precomputed text embeddings "
                f"({', '.join(embeddings.names) or 'none'}); set default_prompt in liveface.json"
            )
        self.embeddings = embeddings
        self.encoder = encoder
        self.default = default
        self._lock = threading.Lock()  # the tokenizer and encoder are not re-entrant

    def embedding(self, prompt: str | None) -> torch.Tensor:
        """The embedding ``(tokens, text_dim)`` of ``prompt`` (None: the default prompt).

        Raises:
            BadInputError: the prompt is unknown and there is no text encoder to encode it.
        """
        name = self.default if prompt is None or not prompt.strip() else prompt
        if self.embeddings is not None and name in self.embeddings.names:
            return self.embeddings.get(name)
        if self.encoder is None:
            names = self.embeddings.names if self.embeddings is not None else []
            raise BadInputError(
                f"prompt {name!r} is not one of the precomputed prompts ({', '.join(names)}) and "
                "the checkpoint has no umT5 text encoder to encode new ones"
            )
        with self._lock:
            return self.encoder.encode([name])[0]

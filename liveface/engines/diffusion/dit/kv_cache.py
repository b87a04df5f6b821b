"""Per-block self-attention keys/values of conditioning tokens (a key/value *prefix*).

Conditioning tokens (the reference latent, motion frames) are clean (timestep 0) and attend only
among themselves (and to segments before them), never to the noisy tokens. Their per-block keys
and values therefore do not change across the denoising steps of a chunk: they are computed once
(:meth:`liveface.engines.diffusion.dit.model.WanDiT.encode_prefix`) and every step's noisy tokens
attend to ``[prefix ; their own]``. Segments can be stacked: the reference's prefix is computed once
per session, the motion frames' once per chunk on top of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from liveface.engines.diffusion.dit.attention import KeyValue, concat_kv


@dataclass(frozen=True)
class PrefixCache:
    """Keys/values of ``tokens`` conditioning tokens for every DiT block.

    Attributes:
        kv: one :class:`KeyValue` per block, ``(batch, heads, tokens, head_dim)`` each.
    """

    kv: tuple[KeyValue, ...]

    @property
    def batch(self) -> int:
        return self.kv[0].k.shape[0]

    @property
    def tokens(self) -> int:
        return self.kv[0].k.shape[2]

    def nbytes(self) -> int:
        """Bytes held by the keys and values."""
        return sum(t.numel() * t.element_size() for kv in self.kv for t in (kv.k, kv.v))

    def then(self, later: PrefixCache) -> PrefixCache:
        """This prefix's tokens followed by ``later``'s (same batch and blocks)."""
        if len(later.kv) != len(self.kv):
            raise ValueError(f"prefixes of {len(self.kv)} and {len(later.kv)} blocks")
        return PrefixCache(tuple(concat_kv(a, b) for a, b in zip(self.kv, later.kv, strict=True)))

    def expand(self, batch: int) -> PrefixCache:
        """Broadcast a batch-1 prefix to ``batch`` samples without copying."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"prefix of batch {self.batch} cannot serve batch {batch}")
        return PrefixCache(
            tuple(
                KeyValue(k=kv.k.expand(batch, -1, -1, -1), v=kv.v.expand(batch, -1, -1, -1))
                for kv in self.kv
            )
        )

    @staticmethod
    def stack(prefixes: Sequence[PrefixCache]) -> PrefixCache:
        """One prefix for several samples (concatenated along the batch axis)."""
        if len(prefixes) == 1:
            return prefixes[0]
        if len({(p.tokens, len(p.kv)) for p in prefixes}) != 1:
            raise ValueError("only prefixes of equal token count and depth can be stacked")
        blocks = zip(*(p.kv for p in prefixes), strict=True)
        return PrefixCache(
            tuple(
                KeyValue(k=torch.cat([kv.k for kv in b]), v=torch.cat([kv.v for kv in b]))
                for b in blocks
            )
        )

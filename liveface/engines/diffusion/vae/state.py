"""The typed streaming state shared by the video VAEs.

Every layer that looks back in time (a causal 3D conv, a temporal resampling conv, a TAEHV MemBlock)
owns one *slot*: a fixed-shape buffer holding the last input frame(s) it saw. The slots are declared
while the model is built (:class:`CacheLayout`), so the state's shapes follow from the config and
the latent (or pixel) grid alone, and a stream's memory stays constant however long it runs.

A fresh state holds zeros, which is exactly the zero padding the causal layers use at the start of a
clip, so decoding a whole clip in one call and decoding it one latent frame at a time run the same
arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class CacheSpec:
    """One slot: ``frames`` past inputs of ``channels`` channels on a grid of ``base * up / down``.

    ``frames == 0`` declares a slot holding a single frame without a time axis
    (``(batch, channels, height, width)``), as the TAEHV MemBlocks use.
    """

    channels: int
    frames: int
    up: int = 1
    down: int = 1

    def shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        h, w = height * self.up // self.down, width * self.up // self.down
        if self.frames == 0:
            return (batch, self.channels, h, w)
        return (batch, self.channels, self.frames, h, w)


@dataclass
class StreamState:
    """What one stream (one session) carries between calls.

    Attributes:
        buffers: one tensor per slot of the model's :class:`CacheLayout`, in slot order.
        height, width: the grid the state was sized for (latent grid for decoders, pixel grid for
            encoders).
        steps: calls done so far; 0 means the next call starts the clip (first-frame rules apply).
    """

    buffers: list[torch.Tensor]
    height: int
    width: int
    steps: int = 0

    @property
    def first(self) -> bool:
        return self.steps == 0

    @property
    def batch(self) -> int:
        return self.buffers[0].shape[0] if self.buffers else 0

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (constant over a stream)."""
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def reset(self) -> None:
        """Start a new clip in place (keeps the allocations)."""
        for b in self.buffers:
            b.zero_()
        self.steps = 0

    @classmethod
    def stack(cls, states: Sequence[StreamState]) -> StreamState:
        """One state for several streams decoded as one batch (copies, batch axis first).

        The streams must share the grid and either all start their clip with the next call or
        all be past it, since the first call of a clip follows other rules.
        """
        if not states:
            raise ValueError("nothing to stack")
        head = states[0]
        if any((s.height, s.width, len(s.buffers)) != (head.height, head.width, len(head.buffers))
               for s in states):  # fmt: skip
            raise ValueError("only states of the same model and grid can be stacked")
        if len({s.first for s in states}) > 1:
            raise ValueError("cannot batch a stream's first call with later calls of others")
        buffers = [
            torch.cat(parts, dim=0) for parts in zip(*(s.buffers for s in states), strict=True)
        ]
        return cls(buffers, head.height, head.width, max(s.steps for s in states))

    def split(self, sizes: Sequence[int]) -> list[StreamState]:
        """Undo :meth:`stack`: one state per stream, with ``sizes`` batch entries each."""
        if sum(sizes) != self.batch:
            raise ValueError(f"sizes {list(sizes)} do not add up to the batch {self.batch}")
        columns = [b.split(list(sizes), dim=0) for b in self.buffers]
        return [
            StreamState([c[i].clone() for c in columns], self.height, self.width, self.steps)
            for i in range(len(sizes))
        ]


@dataclass
class CacheLayout:
    """The slots of one model part, collected while its layers are built."""

    specs: list[CacheSpec] = field(default_factory=list)

    def add(self, spec: CacheSpec) -> int:
        """Declare a slot; returns its index, which the layer keeps."""
        self.specs.append(spec)
        return len(self.specs) - 1

    def allocate(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """A fresh (all-zero) state for ``batch`` streams on a ``height x width`` base grid."""
        buffers = [
            torch.zeros(s.shape(batch, height, width), device=device, dtype=dtype)
            for s in self.specs
        ]
        return StreamState(buffers=buffers, height=height, width=width)

    def nbytes(self, batch: int, height: int, width: int, element_size: int) -> int:
        total = 0
        for s in self.specs:
            n = 1
            for d in s.shape(batch, height, width):
                n *= d
            total += n * element_size
        return total

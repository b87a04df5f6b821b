"""Per-session streaming state and the chunk schedule of the diffusion engine.

A session holds (all shapes fixed at open, whatever the session's length):

- the reference (pivot) latent ``(1, C, 1, h, w)`` and its per-block key/value prefix (computed
  once: the reference attends only to itself);
- the prompt's :class:`~liveface.engines.diffusion.dit.model.TextContext` (shared between
  sessions with the same prompt);
- the motion-frame cache (:class:`~liveface.engines.diffusion.streaming.motion.MotionCache`);
- the decoder's stream state (causal conv caches);
- its codebook, noise seed and interrupt bookkeeping.

Chunk schedule (:func:`plan_chunk`): with the causal VAE a stream's first latent frame decodes to
one video frame and every later one to ``r = 4`` frames. A chunk of ``4k`` frames generates ``k``
latent frames; a chunk of ``1 + 4(k - 1)`` frames (a session's first) generates ``k`` latent frames
on a fresh decoder. A ``4k``-frame chunk on a fresh decoder (the first chunk after an interrupt)
*primes* the decoder with the reference latent, whose single frame is dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from liveface.engines.base import EngineState
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import TextContext
from liveface.engines.diffusion.streaming.codebook import Codebook
from liveface.engines.diffusion.streaming.motion import MotionCache
from liveface.engines.diffusion.vae import StreamState
from liveface.errors import BadInputError, SessionClosedError

#: Mixes a session seed and a frame index into one noise seed (a prime larger than any fps x s).
_SEED_STRIDE = 1_000_003
_SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True)
class ChunkPlan:
    """What one chunk asks of the engine.

    Attributes:
        latents: new latent frames to generate.
        prime: decode the reference latent first and drop its frame (fresh decoder, ``4k``
            frames asked).
    """

    latents: int
    prime: bool


def plan_chunk(num_frames: int, decoder_fresh: bool, ratio: int) -> ChunkPlan:
    """Map a chunk's video frame count onto latent frames (see the module docstring).

    Raises:
        BadInputError: a frame count the causal decoder cannot produce in this state.
    """
    if num_frames > 0 and num_frames % ratio == 0:
        return ChunkPlan(num_frames // ratio, prime=decoder_fresh)
    if num_frames > 0 and decoder_fresh and num_frames % ratio == 1:
        return ChunkPlan((num_frames - 1) // ratio + 1, prime=False)
    want = f"1 + {ratio}k or {ratio}k" if decoder_fresh else f"{ratio}k"
    raise BadInputError(f"a chunk of {num_frames} frames cannot be generated here: need {want}")


def noise_seed(seed: int, first_frame: int) -> int:
    """The noise seed of the chunk starting at ``first_frame``: the same whichever sessions
    share the batch, and the same again after an interrupt rewinds to that frame."""
    return (seed * _SEED_STRIDE + first_frame) & _SEED_MASK


@dataclass
class SessionTensors:
    """What a session holds on the device until it closes.

    Attributes:
        reference: float32 ``(1, C, 1, h, w)``, the portrait's latent.
        reference_prefix: the reference's per-block keys/values, batch 1.
        text: the prompt, batch 1.
        motion: recent clean latents (codebook-corrected).
        decoder: the decoder's stream state, batch 1.
        codebook: drift correction, or None.
    """

    reference: torch.Tensor
    reference_prefix: PrefixCache
    text: TextContext
    motion: MotionCache
    decoder: StreamState
    codebook: Codebook | None


class DiffusionState(EngineState):
    """One session of the diffusion engine (see the module docstring).

    Attributes:
        correction: ``soft`` or ``hard`` codebook correction.
        tau: codebook threshold override (None: the codebook's own).
        seed: noise seed.
        epoch: the newest interrupt epoch seen.
        chunks: chunks generated.
    """

    def __init__(
        self, tensors: SessionTensors, *, correction: str, tau: float | None, seed: int
    ) -> None:
        self._tensors: SessionTensors | None = tensors
        self.correction = correction
        self.tau = tau
        self.seed = seed
        self.epoch = 0
        self.chunks = 0
        self._lock = threading.Lock()
        self._restart = False
        tensors.motion.reset(tensors.reference)

    @property
    def closed(self) -> bool:
        return self._tensors is None

    @property
    def held(self) -> SessionTensors:
        """The session's tensors.

        Raises:
            SessionClosedError: after :meth:`close`.
        """
        if self._tensors is None:
            raise SessionClosedError("the diffusion engine session is closed")
        return self._tensors

    def request_restart(self) -> None:
        """Interrupt (any thread): the next chunk starts from the reference again."""
        with self._lock:
            self._restart = True

    def begin_chunk(self, epoch: int) -> None:
        """Apply a pending interrupt (or a newer epoch) before generating a chunk: the motion
        history restarts from the reference and the decoder from a fresh stream."""
        held = self.held
        with self._lock:
            restart, self._restart = self._restart, False
        if epoch > self.epoch:
            restart, self.epoch = True, epoch
        if restart:
            held.motion.reset(held.reference)
            held.decoder.reset()

    def close(self) -> None:
        """Drop every tensor the session holds."""
        self._tensors = None

"""LiveAvatar's streaming loop, split where timestep forcing splits it.

A session is an endless sequence of *blocks* of ``block_frames`` (3) latent frames, 12 video
frames at 16 fps. Each block goes through the 4 Euler steps; step ``s`` reads and writes only the
session's rolling cache of step ``s``. Nothing of a block's final (clean) latents flows back into
the DiT, except once: after the first clip (``clip_frames`` = 12 latent frames) the sink's
reference becomes the stream's first generated latent (their multi-GPU pipeline;
``refresh_reference``). So the steps can run on different devices, one after the other, each with
its own caches: timestep forcing.

Two halves, so that either can live in another process:

- :class:`BlockFeed` - the session's side that decides: noise (per clip, from a generator seeded
  ``seed + clip`` as their pipeline), the sink offsets of the four steps (from the session's seeded
  generator), when the reference changes. It makes a :class:`BlockWork` per block.
- :class:`StepRunner` - the DiT's side for a range of steps: per session the prompt, the sink and
  the rolling caches of those steps; it advances a batch of :class:`BlockWork` (any sessions)
  through its steps. One runner with every step is the single-device engine; one runner per rank
  is the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.s2v.causal import CausalS2V
from liveface.engines.diffusion.dit.s2v.causal_cache import RollingCache, SinkCache, sink_offsets
from liveface.engines.diffusion.dit.tokens import TextContext
from liveface.engines.diffusion.sampling.euler_discrete import euler_discrete_schedule
from liveface.errors import ConfigError, SessionClosedError

#: Their scripts: ``--sample_steps 4 --sample_solver euler`` (shift 3), ``--base_seed 420``.
DEFAULT_SEED = 420


@dataclass(frozen=True)
class LiveAvatarSampling:
    """LiveAvatar's streaming settings (their scripts and ``num_frames_per_block``).

    Attributes:
        steps, shift: Euler steps (the LoRA is distilled for 4) and timestep shift.
        block_frames: latent frames per block.
        clip_frames: latent frames per clip (``infer_frames`` 48 / 4): the rolling caches' length
            and the noise period.
        refresh_reference: after the first clip the sink's reference becomes the first generated
            latent (their multi-GPU pipeline does; their single-GPU one keeps the portrait).
        prime_latents: motion latents the decoder is primed with before the first block.
        seed: default noise seed of a session.
        fps: the model's frame rate.
        prompt: the prompt when a session gives none.
    """

    steps: int = 4
    shift: float = 3.0
    block_frames: int = 3
    clip_frames: int = 12
    refresh_reference: bool = True
    prime_latents: int = 7
    seed: int = DEFAULT_SEED
    fps: int = 16
    prompt: str = "A person is talking to the camera."

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1 or self.shift <= 0:
            problems.append("steps >= 1 and shift > 0")
        if self.block_frames < 1 or self.clip_frames % self.block_frames:
            problems.append("clip_frames a multiple of block_frames")
        if self.prime_latents < 0 or self.seed < 0:
            problems.append("prime_latents >= 0 and seed >= 0")
        if problems:
            raise ConfigError("invalid LiveAvatar sampling: need " + ", ".join(problems))

    @property
    def block_video_frames(self) -> int:
        """Video frames a block decodes to (4 per latent frame)."""
        return 4 * self.block_frames

    @property
    def blocks_per_clip(self) -> int:
        return self.clip_frames // self.block_frames


@dataclass
class BlockWork:
    """One block of one session on its way through the steps.

    Attributes:
        key: the session (unique within a runner).
        block: the block's number in the session's stream (0, 1, ...).
        latents: float32 ``(1, in_dim, block_frames, h, w)``: noise before step 0, the clean block
            after the last step.
        features: speech features ``(1, layers, audio_dim, 4 * block_frames)``, or None once
            turned into ``tokens``.
        tokens: audio tokens ``(1, block_frames, tokens, dim)`` (made by the first runner).
        offsets: the sink offset of each step.
        reference: a new sink reference ``(1, in_dim, 1, h, w)`` to prefill before this block.
        step: the next step to run.
    """

    key: Hashable
    block: int
    latents: torch.Tensor
    features: torch.Tensor | None
    offsets: tuple[int, ...]
    tokens: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    step: int = 0


@dataclass
class _DiTSession:
    text: TextContext
    motion: torch.Tensor
    sink: SinkCache
    caches: dict[int, RollingCache] = field(default_factory=dict)

    def nbytes(self) -> int:
        return self.sink.nbytes() + sum(c.nbytes() for c in self.caches.values())


class StepRunner:
    """The DiT side for steps ``steps`` (see the module docstring). Not thread-safe."""

    def __init__(self, causal: CausalS2V, sampling: LiveAvatarSampling, steps: range) -> None:
        if not steps or steps.start < 0 or steps.stop > sampling.steps or steps.step != 1:
            raise ConfigError(f"a runner takes consecutive steps within 0..{sampling.steps - 1}")
        self.causal = causal
        self.sampling = sampling
        self.steps = steps
        self.schedule = euler_discrete_schedule(sampling.steps, sampling.shift)
        self._sessions: dict[Hashable, _DiTSession] = {}

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def nbytes(self, key: Hashable) -> int:
        """Bytes of the session's caches held here (constant while it streams)."""
        return self._session(key).nbytes()

    def open(
        self, key: Hashable, text: torch.Tensor, reference: torch.Tensor, motion: torch.Tensor
    ) -> None:
        """Prepare a session: ``text`` ``(tokens, text_dim)`` prompt embedding, ``reference``
        ``(1, in_dim, 1, h, w)`` and ``motion`` ``(1, in_dim, frames, h, w)`` latents."""
        c = self.causal
        dev = c.device
        context = c.dit.prepare_context([text.to(dev)])
        ref, mot = reference.to(dev), motion.to(dev)
        sink = c.prefill_sink(ref, mot, context)
        lay = c.layout(*reference.shape[-2:])
        caches = {s: c.new_cache(lay) for s in self.steps}
        self._sessions[key] = _DiTSession(context, mot, sink, caches)

    def close(self, key: Hashable) -> None:
        self._sessions.pop(key, None)

    @torch.no_grad()
    def warm_up(self, latent_height: int, latent_width: int) -> None:
        """One throw-away block through this runner's steps: compiles the compiled parts, sizes
        the allocator and loads the kernels before the first session pays for them."""
        c = self.causal
        cfg, s2v = c.dit.config, c.dit.s2v
        s = self.sampling
        key = ("warm-up", id(self))
        zeros = torch.zeros(1, cfg.in_dim, 1, latent_height, latent_width)
        motion = zeros.expand(-1, -1, s2v.motion_latents, -1, -1)
        self.open(key, torch.zeros(1, cfg.text_dim), zeros, motion)
        try:
            shape = (1, cfg.in_dim, s.block_frames, latent_height, latent_width)
            features = torch.zeros(1, s2v.audio_layers, s2v.audio_dim, s.block_video_frames)
            work = BlockWork(
                key, 0, torch.randn(shape), features, (4,) * s.steps, step=self.steps.start
            )
            self.run([work])
            if c.device.type == "cuda":
                torch.cuda.synchronize(c.device)
        finally:
            self.close(key)

    def _session(self, key: Hashable) -> _DiTSession:
        s = self._sessions.get(key)
        if s is None:
            raise SessionClosedError(f"no LiveAvatar session {key!r} on this runner")
        return s

    @torch.no_grad()
    def run(self, works: Sequence[BlockWork]) -> None:
        """Advance ``works`` (at most one per session) through this runner's steps, in place."""
        if not works:
            return
        if len({w.key for w in works}) != len(works):
            raise ValueError("one block per session per batch (a session's blocks are ordered)")
        c = self.causal
        dev = c.device
        sessions = [self._session(w.key) for w in works]
        for w, s in zip(works, sessions, strict=True):
            if w.step != self.steps.start:
                raise ValueError(f"block at step {w.step} given to steps {self.steps}")
            if w.reference is not None:
                s.sink = c.prefill_sink(w.reference.to(dev), s.motion, s.text)
            if w.tokens is None:
                assert w.features is not None
                w.tokens = c.dit.clip_audio(w.features.to(dev)).tokens
                w.features = None
        x = torch.cat([w.latents for w in works]).to(dev, torch.float32)
        tokens = AudioTokens(torch.cat([w.tokens for w in works if w.tokens is not None]))
        texts = [s.text for s in sessions]
        sinks = [s.sink for s in sessions]
        blocks = [w.block for w in works]
        for step in self.steps:
            t = self.schedule.timesteps[step].expand(len(works))
            caches = [s.caches[step] for s in sessions]
            offsets = [w.offsets[step] for w in works]
            flow = c.step(x, t, texts, tokens, caches, sinks, blocks, offsets)
            x = self.schedule.update(x, flow, step)
        for i, w in enumerate(works):
            w.latents = x[i : i + 1]
            w.step = self.steps.stop
            w.reference = None


class BlockFeed:
    """The deciding side of one session (see the module docstring).

    Args:
        sampling: the settings.
        seed: noise seed of clip 0 (clip ``r`` draws from ``seed + r``) and of the offsets.
        latent_shape: ``(in_dim, h, w)`` of a latent frame.
    """

    def __init__(
        self, sampling: LiveAvatarSampling, seed: int, latent_shape: tuple[int, int, int]
    ) -> None:
        self.sampling = sampling
        self.seed = seed
        self.latent_shape = latent_shape
        self.block = 0
        self.first_latent: torch.Tensor | None = None
        #: Applied to the first latent before it becomes the sink's reference (a codebook).
        self.correct_reference: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._offsets = torch.Generator().manual_seed(seed)
        self._noise: torch.Tensor | None = None

    def next(self, key: Hashable, features: torch.Tensor | None) -> BlockWork:
        """The next block's work; ``features`` ``(1, layers, audio_dim, 4 * block_frames)`` (or
        None when the caller sets the block's audio ``tokens`` itself)."""
        s = self.sampling
        clip, inside = divmod(self.block, s.blocks_per_clip)
        if inside == 0 or self._noise is None:
            g = torch.Generator().manual_seed(self.seed + clip)
            c, h, w = self.latent_shape
            self._noise = torch.randn(1, c, s.clip_frames, h, w, generator=g)
        reference = None
        if s.refresh_reference and self.block == s.blocks_per_clip:
            if self.first_latent is None:
                raise RuntimeError("the first block's result must come back before block 4")
            reference = self.first_latent
            if self.correct_reference is not None:
                reference = self.correct_reference(reference)
        lo = inside * s.block_frames
        latents = self._noise[:, :, lo : lo + s.block_frames].clone()
        offsets = tuple(sink_offsets(self._offsets, s.steps))
        work = BlockWork(key, self.block, latents, features, offsets, reference=reference)
        self.block += 1
        return work

    def done(self, work: BlockWork) -> None:
        """Take a finished block back (keeps what a later block needs)."""
        if work.step != self.sampling.steps:
            raise ValueError(f"block {work.block} came back after {work.step} steps")
        if work.block == 0:
            self.first_latent = work.latents[:, :, :1].detach().to("cpu", copy=True)

"""One batch step of streaming generation (model glue; the sampler and the models live elsewhere).

For chunks of several sessions that generate the same number of latent frames:

1. audio window -> audio tokens of the new latent frames (:mod:`..audio.conditioner`);
2. conditioning: each session's motion history is patch-embedded and FramePack-pooled
   (:class:`~liveface.engines.diffusion.streaming.motion.MotionLayout`) and run once through the
   DiT at timestep 0 on top of the session's cached reference prefix; the resulting per-block
   keys/values serve every denoising step
   (:meth:`~liveface.engines.diffusion.dit.model.WanDiT.encode_prefix`);
3. few-step flow-matching denoise of the new latent frames, one DiT forward per step for the
   whole batch, per-session noise (:class:`..sampling.seeded.StreamSampler`);
4. codebook drift correction of the new latents, which then enter the motion cache;
5. decode of the new (uncorrected) latents with each session's streaming decoder state.

Execution (:mod:`..backends.stages`): a batch's chunks are grouped by latent length; each group's
audio runs on the AUDIO stage and is handed off to DENOISE; steps 2-4 of a group run on the DENOISE
stage and step 5 on the DECODE stage through an :class:`~..backends.stages.Overlap`, so on CUDA
group ``g + 1`` denoises while group ``g`` decodes and copies its frames (uint8, converted on the
device) into pinned host buffers. The only host synchronisation is waiting for those copies. On
the CPU everything runs in order, with the same results.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from liveface.engines.base import AudioChunk
from liveface.engines.diffusion.audio.conditioner import AudioConditioner
from liveface.engines.diffusion.backends.batching import flatten, group_by
from liveface.engines.diffusion.backends.compiled import CompiledStep
from liveface.engines.diffusion.backends.stages import (
    HostFrames,
    Overlap,
    PinnedPool,
    Stage,
    StageStreams,
    copy_to_host,
    device_frames_to_uint8,
)
from liveface.engines.diffusion.dit.attention import KeyValue
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import TextContext, WanDiT
from liveface.engines.diffusion.dit.rope import RotaryTables
from liveface.engines.diffusion.sampling.seeded import StreamSampler
from liveface.engines.diffusion.streaming.motion import MotionLayout
from liveface.engines.diffusion.streaming.state import ChunkPlan, DiffusionState, noise_seed
from liveface.engines.diffusion.vae import StreamingDecoder, StreamState

#: Input shapes of the DiT step that are compiled (each on its first call); more run eagerly.
MAX_COMPILED_SHAPES = 8

#: One chunk of a batch: the session, its audio, its plan.
Item = tuple[DiffusionState, AudioChunk, ChunkPlan]


class Part(enum.Enum):
    """The parts of a batch that :class:`Profile` times."""

    AUDIO = "audio"
    CONDITION = "condition"
    STEP = "step"  # each denoising step, kept apart in ``Profile.steps``
    CODEBOOK = "codebook"
    DECODE = "decode"


@dataclass
class Profile:
    """Wall time of a batch's parts in ms; with ``enabled`` each part ends with a device sync
    (meant for benchmarks: it stalls the GPU pipeline)."""

    enabled: bool
    device: torch.device
    parts: dict[Part, float] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, part: Part, step: int | None = None) -> None:
        """The part ``part`` (denoising step ``step``) ends now."""
        if not self.enabled:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        ms = (now - self._last) * 1000.0
        self.parts[part] = self.parts.get(part, 0.0) + ms
        if step is not None:
            self.steps.extend([0.0] * (step + 1 - len(self.steps)))
            self.steps[step] += ms
        self._last = now


@dataclass
class ChunkOutput:
    """One chunk's result.

    Attributes:
        frames: uint8 ``(n, H, W, 3)`` on the host.
        corrected: features the codebook pulled back, None without a codebook.
    """

    frames: np.ndarray
    corrected: float | None


@dataclass
class _Group:
    """A group of equal-length chunks in the pipeline (the :class:`~..backends.stages.Overlap` tag).

    ``shapes`` (each chunk's frames, in order, packed flat into one copy) is set by the decode,
    ``counts`` (the codebook corrections of the chunks in ``counted``) by the denoising."""

    items: Sequence[Item]
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    counted: list[int] = field(default_factory=list)
    counts: HostFrames | None = None


def stack_text(texts: Sequence[TextContext]) -> TextContext:
    """One context for a batch: shared (batch 1, broadcast) when every session uses the same."""
    if all(t is texts[0] for t in texts):
        return texts[0]
    kv = None
    if all(t.kv is not None for t in texts):
        blocks = zip(*(t.kv for t in texts if t.kv is not None), strict=True)
        kv = tuple(
            KeyValue(k=torch.cat([x.k for x in b]), v=torch.cat([x.v for x in b])) for b in blocks
        )
    return TextContext(states=torch.cat([t.states for t in texts]), kv=kv)


class ChunkGenerator:
    """Runs batches of chunks through audio, conditioning, sampling, correction and decoding."""

    def __init__(
        self,
        dit: WanDiT,
        audio: AudioConditioner,
        layout: MotionLayout,
        decoder: StreamingDecoder,
        sampler: StreamSampler,
        device: torch.device,
    ) -> None:
        self.dit = dit
        self.audio = audio
        self.layout = layout
        self.decoder = decoder
        self.sampler = sampler
        self.device = device
        self.reference_rope = dit.rotary(layout.reference_positions())
        self.history_rope = dit.rotary(layout.history_positions())
        self._new_rope: dict[int, RotaryTables] = {}
        #: The compiled denoising step (None: the eager DiT); warmed up on its first call.
        self.step: CompiledStep | None = None
        self._compiled_shapes: set[Hashable] = set()
        self.streams = StageStreams(device)
        self.pool = PinnedPool(max_free=8, pin=device.type == "cuda")

    def new_rope(self, latents: int) -> RotaryTables:
        if latents not in self._new_rope:
            self._new_rope[latents] = self.dit.rotary(self.layout.new_positions(latents))
        return self._new_rope[latents]

    @torch.no_grad()
    def reference_prefix(self, reference: torch.Tensor, text: TextContext) -> PrefixCache:
        """Keys/values of the reference latent ``(1, C, 1, h, w)``, once per session."""
        tokens = self.dit.patch_grid(reference).flatten(2).transpose(1, 2)
        return self.dit.encode_prefix(tokens, self.reference_rope, text)

    @torch.no_grad()
    def condition(self, states: Sequence[DiffusionState], text: TextContext) -> PrefixCache:
        """Per-block keys/values of [reference ; compressed history] for a batch of sessions."""
        history = torch.cat([s.held.motion.latents for s in states])
        tokens = self.layout.pool_tokens(self.dit.patch_grid(history))
        past = PrefixCache.stack([s.held.reference_prefix for s in states])
        return self.dit.encode_prefix(tokens, self.history_rope, text, past=past)

    def denoiser(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """One DiT forward, through the compiled step when there is one.

        The first call of each input shape (batch size, chunk length, shared or stacked prompt),
        up to :data:`MAX_COMPILED_SHAPES` of them, warms the step up: it compiles (and, with
        CUDA graphs, captures) for that shape, which stalls that chunk once. Later shapes run
        eagerly."""
        step = self.step
        if step is None:
            out: torch.Tensor = self.dit(*args, **kwargs)
            return out
        if step.fallback_reason is None and len(self._compiled_shapes) < MAX_COMPILED_SHAPES:
            try:
                leaves, spec = flatten((args, kwargs))
                key: Hashable = (spec, tuple(tuple(t.shape) for t in leaves))
            except TypeError:
                key = None
            if key not in self._compiled_shapes:
                self._compiled_shapes.add(key)
                return step.warm_up(*args, **kwargs)
        return step(*args, **kwargs)

    @torch.no_grad()
    def run(self, items: Sequence[Item], profile: Profile) -> list[ChunkOutput]:
        """Generate chunks that all ask for the same number of latent frames."""
        return self.generate([items], profile)[0]

    @torch.no_grad()
    def generate(
        self, groups: Sequence[Sequence[Item]], profile: Profile
    ) -> list[list[ChunkOutput]]:
        """Generate groups of chunks, each of equal latent length and no session twice, one
        group's denoising overlapping the previous group's decoding; results per group."""
        for items in groups:
            k = items[0][2].latents
            if any(plan.latents != k for _, _, plan in items):
                raise ValueError("a batch step needs chunks of equal latent length")
        streams = self.streams
        overlap: Overlap[_Group] = Overlap(streams, self.pool)
        finished = []
        tokens = self._audio(groups[0], profile) if groups else None
        for g, items in enumerate(groups):
            assert tokens is not None
            current = tokens
            streams.handoff(Stage.AUDIO, Stage.DENOISE, current)
            if g + 1 < len(groups):  # the next group's audio runs while this one denoises
                tokens = self._audio(groups[g + 1], profile)
            job = _Group(items)
            denoise = partial(self._denoise, job, current, profile)
            done = overlap.submit(denoise, partial(self._decode, job, profile), job)
            if done is not None:
                finished.append(done)
        last = overlap.flush()
        if last is not None:
            finished.append(last)
        return [self._outputs(f.tag, f.frames) for f in finished]

    def _audio(self, items: Sequence[Item], profile: Profile) -> torch.Tensor:
        with self.streams.run(Stage.AUDIO):
            tokens = self.audio.tokens([c for _, c, _ in items], items[0][2].latents)
        profile.mark(Part.AUDIO)
        return tokens

    def _denoise(self, job: _Group, tokens: torch.Tensor, profile: Profile) -> torch.Tensor:
        """Conditioning, sampling, correction and the motion cache (DENOISE stage)."""
        items = job.items
        k = items[0][2].latents
        states = [s for s, _, _ in items]
        audio = AudioTokens(tokens=tokens, first_frame=0)
        text = stack_text([s.held.text for s in states])
        prefix = self.condition(states, text)
        profile.mark(Part.CONDITION)
        rope = self.new_rope(k)

        def denoise(x: torch.Tensor, t: torch.Tensor, a: AudioTokens = audio) -> torch.Tensor:
            return self.denoiser(x, t, text, positions=rope, audio=a, prefix=prefix)

        def uncond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return denoise(x, t, audio.unconditional())

        generators = []
        for state, chunk, _ in items:
            g = torch.Generator(device=self.device)
            generators.append(g.manual_seed(noise_seed(state.seed, chunk.first_frame)))
        layout = self.layout
        shape = (layout.channels, k, layout.height, layout.width)
        latents = self.sampler.sample(
            denoise, shape, generators, device=self.device, uncond=uncond,
            on_step=lambda i: profile.mark(Part.STEP, i),
        )  # fmt: skip
        corrected = self._correct_and_remember(states, latents)
        job.counted = [i for i, c in enumerate(corrected) if c is not None]
        if job.counted:
            counts = torch.stack(
                [c.to(torch.float64).reshape(()) for c in corrected if c is not None]
            )
            job.counts = copy_to_host(
                self.streams, counts, self.pool, after=self.streams.record(Stage.DENOISE)
            )
        profile.mark(Part.CODEBOOK)
        return latents

    def _correct_and_remember(
        self, states: Sequence[DiffusionState], latents: torch.Tensor
    ) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for i, state in enumerate(states):
            held, new = state.held, latents[i : i + 1]
            count = None
            if held.codebook is not None:
                new, count = held.codebook.correct(new, mode=state.correction, tau=state.tau)
            held.motion.push(new.to(held.motion.latents.dtype))
            out.append(count)
        return out

    def _decode(self, job: _Group, profile: Profile, latents: torch.Tensor) -> torch.Tensor:
        """Decode each session's new latents on its own stream state (DECODE stage); sessions
        whose calls look alike (fresh or not, same length) share one batched decoder call.

        Returns every chunk's uint8 frames packed into one flat tensor (one copy to the host);
        their shapes go to ``job.shapes``."""
        items = job.items
        inputs: list[torch.Tensor] = []
        for i, (session, _, plan) in enumerate(items):
            z = latents[i : i + 1]
            if plan.prime:
                z = torch.cat([session.held.reference.to(z.dtype), z], dim=2)
            inputs.append(z)
        keys = [
            (s.held.decoder.first, z.shape[2]) for (s, _, _), z in zip(items, inputs, strict=True)
        ]
        frames: dict[int, torch.Tensor] = {}
        for members in group_by(keys):
            held = [items[i][0].held for i in members]
            z = torch.cat([inputs[i] for i in members])
            if len(members) == 1:
                stream = held[0].decoder
            else:
                stream = StreamState.stack([h.decoder for h in held])
            video = device_frames_to_uint8(self.decoder.decode_step(z, stream))
            if len(members) > 1:
                for h, part in zip(held, stream.split([1] * len(members)), strict=True):
                    h.decoder = part
            for j, i in enumerate(members):
                frames[i] = video[j, 1:] if items[i][2].prime else video[j]
        ordered = [frames[i] for i in range(len(items))]
        job.shapes = [tuple(f.shape) for f in ordered]
        packed = torch.cat([f.reshape(-1) for f in ordered])
        profile.mark(Part.DECODE)
        return packed

    @staticmethod
    def _outputs(job: _Group, packed: np.ndarray) -> list[ChunkOutput]:
        """Unpack a group's frames and codebook counts (on the host)."""
        counts: list[float | None] = [None] * len(job.items)
        if job.counts is not None:
            for i, c in zip(job.counted, job.counts.result().tolist(), strict=True):
                counts[i] = float(c)
        out, offset = [], 0
        for shape, count in zip(job.shapes, counts, strict=True):
            size = int(np.prod(shape))
            out.append(ChunkOutput(packed[offset : offset + size].reshape(shape), count))
            offset += size
        return out

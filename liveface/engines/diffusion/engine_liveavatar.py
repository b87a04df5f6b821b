"""LiveAvatar behind the engine contract: one chunk is one block of 12 video frames.

The engine is the session side of :mod:`.streaming.liveavatar`: it encodes the portrait (the
reference latent, and the motion latents of the portrait held for ``motion_frames`` frames, as
their pipeline does), the prompt (umT5) and each chunk's speech features; it keeps each session's
:class:`~.streaming.liveavatar.BlockFeed` and decoder state; the DiT work goes to a
:class:`BlockDenoiser`: a local :class:`~.streaming.liveavatar.StepRunner` with all four steps
(:class:`LocalDenoiser`, one device) or the timestep-forcing pipeline of :mod:`.parallel` (one
step per rank). Several engines (lanes) may share one denoiser and one set of parts: each lane is
driven by its own EngineWorker, so the pipeline holds several batches at once; on one GPU two lanes
let one lane decode (on its own CUDA stream) while the other denoises.

Timing: a block decodes to 12 frames at 16 fps. The decoder is primed with the first motion
latents before a session's first block, whose first 3 frames are dropped (their pipeline); so the
first chunk has 9 frames and is driven by the audio of the 12 frames it was generated for
(starting 3 frames before the session, silence there), and video frame ``n`` animates audio frame
``n`` throughout.

The DiT's memory per session is fixed at open (four rolling caches one clip long and a sink);
the decoder's stream state is fixed too. ``interrupt`` keeps the stream going (the caches are the
avatar's continuity; the new audio takes over at the next block).

Session options (``open``): ``seed`` (int >= 0), ``codebook`` (bool, default off: pulls the
refreshed sink reference back onto an identity codebook of the portrait; changes the official
output, so it is off unless asked for).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from liveface.engines.base import AudioChunk, ChunkInfo, Engine, EngineSpec, EngineState, VideoChunk
from liveface.engines.diffusion.audio.s2v_features import (
    SAMPLE_RATE,
    Encoder,
    StreamingFeatures,
    chunk_window,
)
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.portrait import augmented_views, default_portrait, fit_portrait
from liveface.engines.diffusion.streaming.codebook import Codebook, build_codebook, latent_features
from liveface.engines.diffusion.streaming.liveavatar import (
    BlockFeed,
    BlockWork,
    LiveAvatarSampling,
    StepRunner,
)
from liveface.engines.diffusion.vae import WanVAE
from liveface.engines.diffusion.vae.interface import StreamingDecoder, frames_to_uint8
from liveface.engines.diffusion.vae.state import StreamState
from liveface.engines.options import bool_option, seed_option, session_options
from liveface.errors import BadInputError, ConfigError, SessionClosedError

#: Frames the first block drops after the primed decoder (their pipeline: ``image[:, :, 3:]``).
FIRST_TRIM = 3
TEXT_CACHE_SIZE = 8
QUALITY_LEVELS = ("4 steps", "4 steps, light decoder")


class BlockDenoiser(Protocol):
    """Where the DiT work of blocks runs (thread-safe: lanes call it concurrently)."""

    def open(
        self, key: Hashable, text: torch.Tensor, reference: torch.Tensor, motion: torch.Tensor
    ) -> None: ...

    def close(self, key: Hashable) -> None: ...

    def run(self, works: list[BlockWork]) -> None: ...


class LocalDenoiser:
    """All steps in this process, on one device (the same schedule cycles the step caches)."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self._lock = threading.Lock()

    def open(
        self, key: Hashable, text: torch.Tensor, reference: torch.Tensor, motion: torch.Tensor
    ) -> None:
        with self._lock:
            self.runner.open(key, text, reference, motion)

    def close(self, key: Hashable) -> None:
        with self._lock:
            self.runner.close(key)

    def run(self, works: list[BlockWork]) -> None:
        with self._lock:
            self.runner.run(works)


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> list[torch.Tensor]: ...


@dataclass
class LiveAvatarParts:
    """The session side's models, shared by every lane.

    Attributes:
        config: the S2V model's config (motion frames; the DiT itself may live elsewhere).
        vae: the Wan2.1 VAE (encode, and the default decoder).
        speech: the wav2vec2 encoder returning all hidden states.
        text: the umT5 encoder.
        device: where the session side runs.
        light_decoder: an optional light decoder of the same latents (TAEHV), a quality level.
    """

    config: S2VConfig
    vae: WanVAE
    speech: Encoder
    text: TextEncoder
    device: torch.device
    light_decoder: StreamingDecoder | None = None
    keys: Iterator[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    texts: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict)

    def new_key(self) -> int:
        with self.lock:
            return next(self.keys)

    def prompt(self, prompt: str) -> torch.Tensor:
        """The prompt's embedding ``(tokens, text_dim)``; the newest few stay cached."""
        with self.lock:
            if prompt not in self.texts:
                self.texts[prompt] = self.text.encode([prompt])[0].float().cpu()
                while len(self.texts) > TEXT_CACHE_SIZE:
                    self.texts.popitem(last=False)
            self.texts.move_to_end(prompt)
            return self.texts[prompt]


@dataclass(frozen=True)
class LiveAvatarEngineConfig:
    """What the server decides.

    Attributes:
        width, height: output size (multiples of 64; their 720x400 area fits 704x384).
        lookahead_ms: audio the engine may read past a chunk (at least what the features need).
        context_ms: left context of the streaming speech encoder.
        max_batch: blocks (of different sessions) per call.
        sampling: the streaming settings.
    """

    width: int = 704
    height: int = 384
    lookahead_ms: int = 0
    context_ms: int = 1000
    max_batch: int = 4
    sampling: LiveAvatarSampling = field(default_factory=LiveAvatarSampling)


class LiveAvatarState(EngineState):
    """One session: its key at the denoiser, feed, decoder state and recent latents."""

    def __init__(self, key: int, feed: BlockFeed, motion: torch.Tensor) -> None:
        self.key = key
        self.feed = feed
        self.motion = motion
        self.recent: torch.Tensor | None = None  # the newest prime_latents latents, for a switch
        self.decoder: StreamingDecoder | None = None
        self.state: StreamState | None = None
        self.closed = False


def _state(state: EngineState) -> LiveAvatarState:
    if not isinstance(state, LiveAvatarState):
        raise BadInputError("not a LiveAvatar session")
    if state.closed:
        raise SessionClosedError("the LiveAvatar session is closed")
    return state


class LiveAvatarEngine(Engine):
    """LiveAvatar (see the module docstring); several lanes may share ``parts`` and ``denoiser``."""

    name = "diffusion"

    def __init__(
        self, parts: LiveAvatarParts, denoiser: BlockDenoiser, config: LiveAvatarEngineConfig
    ) -> None:
        s = config.sampling
        if config.width % 64 or config.height % 64:
            raise ConfigError(
                f"LiveAvatar needs width and height divisible by 64 "
                f"(got {config.width}x{config.height})"
            )
        self.parts = parts
        self.denoiser = denoiser
        self.config = config
        hop = SAMPLE_RATE // 50
        self.features = StreamingFeatures(
            fps=s.fps, block_frames=4,
            context_features=max(1, config.context_ms * SAMPLE_RATE // 1000 // hop),
            lookahead_features=config.lookahead_ms * SAMPLE_RATE // 1000 // hop,
        )  # fmt: skip
        n = s.block_video_frames
        left, ahead = self.features.session_reach(n, FIRST_TRIM)
        self._spec = EngineSpec(
            fps=s.fps, width=config.width, height=config.height, chunk_frames=n,
            first_chunk_frames=n - FIRST_TRIM, sample_rate=SAMPLE_RATE, left_context=left,
            lookahead=max(ahead, config.lookahead_ms * SAMPLE_RATE // 1000),
            max_batch=config.max_batch,
        )  # fmt: skip
        self.levels = list(QUALITY_LEVELS[: 2 if parts.light_decoder is not None else 1])
        self.level = 0
        cuda = parts.device.type == "cuda"
        self._decode_stream = torch.cuda.Stream(parts.device) if cuda else None

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    # -- sessions ---------------------------------------------------------------------------------
    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> LiveAvatarState:
        s, p = self.config.sampling, self.parts
        options = session_options(options, ("seed", "codebook"), "LiveAvatar")
        seed = seed_option(options, s.seed)
        use_codebook = bool_option(options, "codebook", False)
        image = fit_portrait(
            portrait if portrait is not None else default_portrait(),
            self.spec.width, self.spec.height,
        )  # fmt: skip
        text = p.prompt(prompt.strip() if prompt and prompt.strip() else s.prompt)
        with torch.no_grad():
            pixels = torch.from_numpy(image).to(p.device).float().div(127.5).sub(1.0)
            reference = p.vae.encode(pixels[None, None]).float()
            held = pixels[None, None].expand(1, p.config.motion_frames, *pixels.shape)
            motion = p.vae.encode(held, latents_per_step=1).float()
            codebook = self._codebook(image, seed) if use_codebook else None
        key = p.new_key()
        self.denoiser.open(key, text, reference.cpu(), motion.cpu())
        _, channels, _, h, w = reference.shape
        feed = BlockFeed(s, seed, (channels, h, w))
        if codebook is not None:
            feed.correct_reference = lambda z: codebook.correct(z.to(p.device))[0].cpu()
        return LiveAvatarState(key, feed, motion)

    def _codebook(self, image: np.ndarray, seed: int) -> Codebook:
        views = torch.from_numpy(augmented_views(image, 8))
        latents = self.parts.vae.encode(views[:, None].to(self.parts.device)).float()
        gen = torch.Generator().manual_seed(seed)
        return build_codebook(latent_features(latents).cpu(), 256, generator=gen).to(
            self.parts.device
        )

    def interrupt(self, state: EngineState) -> None:
        _state(state)  # the stream continues; queued chunks were dropped by the worker

    def close(self, state: EngineState) -> None:
        if isinstance(state, LiveAvatarState) and not state.closed:
            state.closed = True
            self.denoiser.close(state.key)
            state.state = None

    @property
    def alive(self) -> bool:
        """False while the pipeline (if any) is down; the worker reports it as unhealthy."""
        return bool(getattr(self.denoiser, "alive", True))

    def shutdown(self) -> None:
        stop = getattr(self.denoiser, "shutdown", None)
        if stop is not None:
            stop()

    def quality_levels(self) -> list[str]:
        return list(self.levels)

    def set_quality(self, level: int) -> None:
        self.level = level

    # -- blocks -----------------------------------------------------------------------------------
    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        s = self.config.sampling
        states = [_state(state) for state, _ in batch]
        works = []
        for st, (_, chunk) in zip(states, batch, strict=True):
            if not 0 < chunk.num_frames <= s.block_video_frames:
                raise BadInputError(
                    f"a LiveAvatar chunk has 1..{s.block_video_frames} frames "
                    f"(got {chunk.num_frames})"
                )
            a, b = chunk_window(chunk.first_frame, chunk.num_frames, s.block_video_frames)
            feats = self.features.features(self.parts.speech, chunk.read, a, b)
            works.append(st.feed.next(st.key, feats))
        self.denoiser.run(works)
        out = []
        stream = self._decode_stream
        for st, (_, chunk), work in zip(states, batch, works, strict=True):
            st.feed.done(work)
            if stream is None:
                video = self._decode(st, work.latents)[:, -chunk.num_frames :]
                pixels = frames_to_uint8(video[0]).cpu().numpy()
            else:  # on this lane's own stream: it overlaps another lane's denoising
                stream.wait_stream(torch.cuda.current_stream(self.parts.device))
                with torch.cuda.stream(stream):
                    video = self._decode(st, work.latents)[:, -chunk.num_frames :]
                    pixels = frames_to_uint8(video[0]).cpu().numpy()
            out.append(
                VideoChunk(
                    frames=pixels,
                    first_frame=chunk.first_frame,
                    start=chunk.start,
                    audio=np.array(chunk.samples, dtype=np.float32),
                    voiced=chunk.voiced,
                    epoch=chunk.epoch,
                    info=ChunkInfo(steps=s.steps, latent_frames=s.block_frames),
                )
            )
        return out

    @torch.no_grad()
    def _decode(self, st: LiveAvatarState, latents: torch.Tensor) -> torch.Tensor:
        """The block's frames ``(1, 12, H, W, 3)`` in [-1, 1] through the session's decoder."""
        p, s = self.parts, self.config.sampling
        decoder: StreamingDecoder = p.vae
        if self.level == 1 and p.light_decoder is not None:
            decoder = p.light_decoder
        if st.decoder is not decoder or st.state is None:
            # A fresh stream (or a switch of decoder): prime it with the latents before.
            prime = st.motion[:, :, : s.prime_latents] if st.recent is None else st.recent
            h, w = latents.shape[-2:]
            st.decoder, st.state = decoder, decoder.init_state(1, h, w)
            if prime.shape[2]:
                decoder.decode_step(prime.to(p.device), st.state)
        z = latents.to(p.device)
        keep = s.prime_latents
        recent = z if st.recent is None else torch.cat([st.recent, z], dim=2)
        st.recent = recent[:, :, -keep:] if keep else recent[:, :, :0]
        return decoder.decode_step(z, st.state)

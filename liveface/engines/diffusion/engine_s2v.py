"""Wan-S2V behind the engine contract: the live engine and the exact offline renderer.

Live (:meth:`S2VEngine.generate`): a chunk is one clip (``infer_frames`` video frames at 16 fps;
the first chunk ``FIRST_CLIP_TRIM`` frames shorter, as the official first clip). Speech features
follow the streaming definition (:class:`~.audio.s2v_features.StreamingFeatures`), so a chunk
reads only its window (``spec.left_context`` / ``spec.lookahead``). Motion comes from the
session's last decoded frames, re-encoded by the VAE after every clip. The first clip of a session
is driven by the audio of the frames it generates (it starts ``FIRST_CLIP_TRIM`` frames before
the session and those frames are dropped), so video and audio stay in sync. Quality levels trade
guidance and steps (the official 40-step CFG schedule is far from real time).

Offline (:meth:`S2VEngine.render_clips`): the official pipeline exactly: whole-clip speech
features, clips of ``infer_frames``, seeds ``seed + clip``. Like the official ``generate.py``, the
frames are laid from the start of the audio; the official first clip drops its first frames, so
its picture runs ``FIRST_CLIP_TRIM`` frames ahead of the sound.

Session options (``open``): ``seed`` (int >= 0).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from liveface.engines.base import (
    AudioChunk,
    ChunkInfo,
    Engine,
    EngineSpec,
    EngineState,
    VideoChunk,
)
from liveface.engines.diffusion.audio.s2v_features import (
    SAMPLE_RATE,
    StreamingFeatures,
    chunk_window,
    whole_clip_features,
)
from liveface.engines.diffusion.checkpoint.s2v_loading import S2VBundle
from liveface.engines.diffusion.dit.tokens import TextContext
from liveface.engines.diffusion.portrait import default_portrait, fit_portrait
from liveface.engines.diffusion.streaming.s2v_clips import (
    FIRST_CLIP_TRIM,
    ClipGenerator,
    ClipState,
    S2VSampling,
)
from liveface.engines.diffusion.vae.interface import frames_to_uint8
from liveface.engines.options import seed_option, session_options
from liveface.errors import BadInputError, ConfigError, SessionClosedError

log = logging.getLogger(__name__)

#: Prompts whose text keys/values stay cached (the negative prompt is one of them).
TEXT_CACHE_SIZE = 8


def quality_schedule(steps: int, guidance: float) -> list[tuple[int, float]]:
    """The configured (steps, guidance), then without guidance, then halved steps down to 4."""
    out = [(steps, guidance)]
    if guidance != 1.0:
        out.append((steps, 1.0))
    while steps > 4:
        steps = max(4, steps // 2)
        out.append((steps, 1.0))
    return out


class S2VState(EngineState):
    """One session: the clip state, its seed, and interrupt bookkeeping."""

    def __init__(self, clips: ClipState, seed: int) -> None:
        self._clips: ClipState | None = clips
        self.seed = seed
        self.epoch = 0
        self._restart = False
        self._lock = threading.Lock()

    @property
    def clips(self) -> ClipState:
        if self._clips is None:
            raise SessionClosedError("the S2V session is closed")
        return self._clips

    def request_restart(self) -> None:
        with self._lock:
            self._restart = True

    def begin_chunk(self, epoch: int) -> None:
        """An interrupt (or newer epoch) drops the motion: the next clip starts afresh."""
        with self._lock:
            restart, self._restart = self._restart, False
        if epoch > self.epoch:
            restart, self.epoch = True, epoch
        if restart:
            c = self.clips
            c.motion = None
            c.last_frames.zero_()

    def close(self) -> None:
        self._clips = None


@dataclass(frozen=True)
class S2VEngineConfig:
    """What the server decides (the checkpoint decides the model).

    Attributes:
        width, height: output size (multiples of 64).
        fps: must be the model's 16.
        lookahead_ms: audio the engine may read past a chunk (at least what the features need).
        sampling: the official settings (clip length, steps, shift, guidance, seed, prompts).
        context_ms: left context of the streaming speech encoder.
    """

    width: int = 512
    height: int = 512
    fps: int = 16
    lookahead_ms: int = 0
    sampling: S2VSampling = field(default_factory=S2VSampling)
    context_ms: int = 1000


class S2VEngine(Engine):
    """Wan-S2V (see the module docstring)."""

    name = "diffusion"

    def __init__(self, bundle: S2VBundle, config: S2VEngineConfig) -> None:
        s = config.sampling
        if config.fps != s.fps:
            raise ConfigError(f"Wan-S2V renders {s.fps} fps: set fps = {s.fps} (got {config.fps})")
        if config.width % 64 or config.height % 64:
            raise ConfigError(
                "Wan-S2V needs width and height divisible by 64 "
                f"(got {config.width}x{config.height})"
            )
        self.bundle = bundle
        self.config = config
        self.generator = ClipGenerator(bundle.dit, bundle.vae, s)
        hop = SAMPLE_RATE // 50
        extra = config.lookahead_ms * SAMPLE_RATE // 1000
        self.features = StreamingFeatures(
            fps=s.fps,
            block_frames=4,
            context_features=max(1, config.context_ms * SAMPLE_RATE // 1000 // hop),
            lookahead_features=extra // hop,
        )
        left, ahead = self.features.session_reach(s.infer_frames, FIRST_CLIP_TRIM)
        self._spec = EngineSpec(
            fps=s.fps, width=config.width, height=config.height, chunk_frames=s.infer_frames,
            first_chunk_frames=s.infer_frames - FIRST_CLIP_TRIM, sample_rate=SAMPLE_RATE,
            left_context=left, lookahead=max(ahead, extra), max_batch=1,
        )  # fmt: skip
        self.levels = quality_schedule(s.steps, s.guidance)
        self.level = 0
        self._texts: OrderedDict[str, TextContext] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    # -- sessions ---------------------------------------------------------------------------------
    def _text(self, prompt: str) -> TextContext:
        """The prompt's context; the newest ``TEXT_CACHE_SIZE`` prompts stay cached."""
        with self._lock:
            if prompt not in self._texts:
                emb = self.bundle.text.encode([prompt])[0].to(self.bundle.device)
                self._texts[prompt] = self.bundle.dit.prepare_context([emb])
                while len(self._texts) > TEXT_CACHE_SIZE:
                    self._texts.popitem(last=False)
            self._texts.move_to_end(prompt)
            return self._texts[prompt]

    def _start(
        self, portrait: np.ndarray | None, prompt: str | None, seed: int | None = None
    ) -> ClipState:
        s, spec = self.config.sampling, self.spec
        image = fit_portrait(
            portrait if portrait is not None else default_portrait(), spec.width, spec.height
        )
        pixels = torch.from_numpy(image).float().div(127.5).sub(1.0)
        text = self._text(prompt.strip() if prompt and prompt.strip() else s.prompt)
        return self.generator.start(pixels, text, self._text(s.negative_prompt), seed)

    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> S2VState:
        seed = seed_option(session_options(options, ("seed",), "S2V"), self.config.sampling.seed)
        return S2VState(self._start(portrait, prompt, seed), seed)

    def interrupt(self, state: EngineState) -> None:
        _state(state).request_restart()

    def close(self, state: EngineState) -> None:
        _state(state).close()

    def quality_levels(self) -> list[str]:
        return [f"{n} steps" + ("" if g == 1.0 else f", guidance {g:g}") for n, g in self.levels]

    def set_quality(self, level: int) -> None:
        self.level = level

    def shutdown(self) -> None:
        with self._lock:
            self._texts.clear()
        if self.bundle.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- live -------------------------------------------------------------------------------------
    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        out = []
        for state, chunk in batch:
            s = _state(state)
            s.begin_chunk(chunk.epoch)
            a, b = chunk_window(
                chunk.first_frame, chunk.num_frames, self.config.sampling.infer_frames
            )
            feats = self.features.features(self.bundle.speech, chunk.read, a, b)
            steps, guidance = self.levels[self.level]
            video = self.generator.clip(
                s.clips, feats, keep=chunk.num_frames, steps=steps, guidance=guidance
            )
            out.append(
                VideoChunk(
                    frames=frames_to_uint8(video[0]).cpu().numpy(),
                    first_frame=chunk.first_frame,
                    start=chunk.start,
                    audio=np.array(chunk.samples, dtype=np.float32),
                    voiced=chunk.voiced,
                    epoch=chunk.epoch,
                    info=ChunkInfo(steps=steps),
                )
            )
        return out

    # -- offline ----------------------------------------------------------------------------------
    def render_clips(
        self,
        audio: np.ndarray,
        portrait: np.ndarray | None,
        prompt: str | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[VideoChunk]:
        """The official offline pipeline on a whole 16 kHz waveform ``(samples,)`` (see the
        module docstring); chunks cover frames from 0 on, each with the samples they span."""
        s, spec = self.config.sampling, self.spec
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        feats = whole_clip_features(self.bundle.speech, wave, s.fps, s.infer_frames)
        clips = feats.shape[-1] // s.infer_frames
        total = clips * s.infer_frames - FIRST_CLIP_TRIM
        state = self._start(portrait, prompt)
        first = 0
        for r in range(clips):
            part = feats[..., r * s.infer_frames : (r + 1) * s.infer_frames]
            n = s.infer_frames - (FIRST_CLIP_TRIM if r == 0 else 0)

            def step(i: int, done: int = first, count: int = n) -> None:
                if progress is not None:
                    progress(done + (i + 1) * count // s.steps, total)

            video = self.generator.clip(state, part, on_step=step)
            start, end = spec.frame_start(first), spec.frame_start(first + n)
            samples = np.zeros(end - start, np.float32)
            have = audio[start:end]
            samples[: have.shape[0]] = have
            yield VideoChunk(
                frames=frames_to_uint8(video[0]).cpu().numpy(), first_frame=first, start=start,
                audio=samples, voiced=True,
            )  # fmt: skip
            first += n


def _state(state: EngineState) -> S2VState:
    if not isinstance(state, S2VState):
        raise BadInputError("not an S2V engine session")
    return state


def create_s2v_engine(
    checkpoint: str | None,
    *,
    width: int = 512,
    height: int = 512,
    fps: int | None = None,
    lookahead_ms: int = 0,
    fp8: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> S2VEngine:
    """The S2V engine for an official Wan2.2-S2V-14B folder (bfloat16 on CUDA; ``fp8`` stores the
    DiT's block weights in FP8). The model's 16 fps and clip length are its own.

    Raises:
        ConfigError: not an S2V folder (the model found is named), parts missing (named).
        CheckpointError: a damaged file or key (named).
    """
    from liveface.engines.diffusion.checkpoint.s2v_loading import load_s2v_bundle

    bundle = load_s2v_bundle(checkpoint, device=device, dtype=dtype, fp8=fp8)
    config = S2VEngineConfig(width=width, height=height, lookahead_ms=lookahead_ms)
    if fps is not None and fps != config.fps:
        log.warning("Wan-S2V renders %d fps; the configured %d fps is not used", config.fps, fps)
    return S2VEngine(bundle, config)

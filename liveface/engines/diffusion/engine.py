"""The diffusion engine: DiT + audio adapter + VAE behind the engine contract, streaming.

``factory.create_diffusion_engine(config)`` loads a checkpoint directory (layout:
:mod:`.checkpoint.bundle`) and sizes the engine from the server config. Per chunk see
:mod:`.streaming.generation`; per session see :mod:`.streaming.state`.

Timing (:attr:`DiffusionEngine.spec`): one latent frame is ``r = 4`` video frames; a chunk is
``chunk_latents`` latent frames (``4 k`` frames), a session's first chunk ``1 + 4 (k1 - 1)`` frames
(the causal VAE's first latent frame is one frame). ``left_context`` covers the speech encoder's
context plus the audio front end's; ``lookahead`` comes from the server config.

Session options (``open``): ``seed`` (int >= 0, noise), ``codebook`` (bool, drift correction on
or off), ``codebook_mode`` (``soft`` / ``hard``), ``codebook_tau`` (positive float).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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
from liveface.engines.diffusion.audio.conditioner import AudioConditioner, AudioPlan
from liveface.engines.diffusion.backends.batching import group_by
from liveface.engines.diffusion.backends.compiled import CompileConfig, CompiledStep
from liveface.engines.diffusion.checkpoint.loading import Bundle
from liveface.engines.diffusion.dit.model import TextContext
from liveface.engines.diffusion.portrait import augmented_views, default_portrait, fit_portrait
from liveface.engines.diffusion.sampling.flow import cheaper_schedules, describe_schedule
from liveface.engines.diffusion.sampling.seeded import StreamSampler
from liveface.engines.diffusion.streaming.codebook import (
    CORRECTION_MODES,
    Codebook,
    build_codebook,
    latent_features,
)
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.engines.diffusion.streaming.generation import ChunkGenerator, ChunkOutput, Profile
from liveface.engines.diffusion.streaming.motion import MotionCache, MotionLayout
from liveface.engines.diffusion.streaming.state import (
    ChunkPlan,
    DiffusionState,
    SessionTensors,
    plan_chunk,
)
from liveface.engines.diffusion.vae import StreamingDecoder
from liveface.engines.options import bool_option, seed_option, session_options
from liveface.errors import BadInputError, ConfigError

#: Prompts whose text keys/values stay cached for new sessions.
TEXT_CACHE_SIZE = 8
#: Portrait views the VAE encodes per call when building an identity codebook.
ENCODE_BATCH = 4


class DiffusionEngine(Engine):
    """Streaming talking-portrait generation with a Wan-style DiT (see the module docstring).

    Args:
        bundle: the loaded checkpoint.
        width, height: output size (multiples of the VAE's spatial ratio times the DiT patch).
        fps: output frame rate; must be the audio adapter's.
        lookahead: samples of audio after a chunk the engine reads (0: strictly causal).
        stream: streaming settings (default: the checkpoint's).
        profile: time each part of a batch (device syncs; for benchmarks), into VideoChunk.info.
    """

    name = "diffusion"

    def __init__(
        self,
        bundle: Bundle,
        *,
        width: int,
        height: int,
        fps: int,
        lookahead: int = 0,
        stream: GenerationConfig | None = None,
        profile: bool = False,
    ) -> None:
        self.bundle = bundle
        self.stream = stream if stream is not None else bundle.manifest.stream
        self.profile = profile
        dit, vae, adapter = bundle.dit, bundle.vae, bundle.adapter
        audio_cfg = adapter.config
        if fps != audio_cfg.fps:
            raise ConfigError(
                f"the audio adapter was trained at {audio_cfg.fps} fps: set fps = "
                f"{audio_cfg.fps} (got {fps})"
            )
        light = bundle.light_decoder
        self.decoder: StreamingDecoder = (
            light if light is not None and self.stream.decoder != "vae" else vae
        )
        ratio = vae.spatial_ratio
        _, ph, pw = dit.config.patch_size
        if width % (ratio * pw) or height % (ratio * ph) or self.decoder.spatial_ratio != ratio:
            raise ConfigError(
                f"width and height must be multiples of {ratio * pw} for this checkpoint "
                f"(got {width}x{height})"
            )
        self.frames_per_latent = vae.temporal_ratio
        layout = MotionLayout(
            self.stream.motion, dit.config.in_dim, height // ratio, width // ratio, (ph, pw)
        )
        self.layout = layout
        plan = AudioPlan.create(
            audio_cfg, adapter.projector.left_context_frames, self.stream.audio_context_ms,
            lookahead,
        )  # fmt: skip
        self.audio = AudioConditioner(bundle.encoder, adapter, plan, self.stream.idle)
        self.schedules = cheaper_schedules(self.stream.sampler)
        self.sampler = StreamSampler(self.stream.sampler)
        self.generator = ChunkGenerator(
            dit, self.audio, layout, self.decoder, self.sampler, bundle.device
        )
        mode = self.stream.compile_mode(bundle.device)
        if mode != "off":
            self.generator.step = CompiledStep(
                dit, CompileConfig(mode=mode), device=bundle.device, name="DiT denoising step"
            )
        r = self.frames_per_latent
        self._spec = EngineSpec(
            fps=fps,
            width=width,
            height=height,
            chunk_frames=r * self.stream.chunk_latents,
            first_chunk_frames=1 + r * (self.stream.first_chunk_latents - 1),
            sample_rate=audio_cfg.sample_rate,
            left_context=plan.left_context,
            lookahead=lookahead,
            max_batch=self.stream.max_batch,
        )
        self._texts: OrderedDict[str | None, TextContext] = OrderedDict()
        self._text_lock = threading.Lock()

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    # -- sessions -------------------------------------------------------------------------------
    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> DiffusionState:
        """Encode the portrait, the prompt and the identity codebook.

        Raises:
            BadInputError: an unusable portrait, unknown prompt, or bad option.
        """
        seed, use_codebook, mode, tau = self._options(options or {})
        b, spec = self.bundle, self.spec
        if portrait is None:
            portrait = b.portrait if b.portrait is not None else default_portrait()
        image = fit_portrait(portrait, spec.width, spec.height)
        cb_cfg = self.stream.codebook
        identity = use_codebook and cb_cfg.source == "identity"
        views = augmented_views(image, cb_cfg.views) if identity else image[None]
        with torch.no_grad():
            latents = torch.cat(
                [
                    b.vae.encode(torch.from_numpy(views[i : i + ENCODE_BATCH])[:, None])
                    for i in range(0, views.shape[0], ENCODE_BATCH)
                ]
            ).float()
            reference = latents[:1]
            codebook: Codebook | None = None
            if identity:
                gen = torch.Generator().manual_seed(seed)
                codebook = build_codebook(
                    latent_features(latents).cpu(), cb_cfg.size, iterations=cb_cfg.iterations,
                    tau=cb_cfg.tau, tau_scale=cb_cfg.tau_scale, generator=gen,
                ).to(b.device)  # fmt: skip
            elif use_codebook and cb_cfg.source == "file":
                codebook = b.codebook
            text = self._text(prompt)
            ref_prefix = self.generator.reference_prefix(reference, text)
        layout = self.layout
        tensors = SessionTensors(
            reference=reference,
            reference_prefix=ref_prefix,
            text=text,
            motion=MotionCache(layout, device=b.device, dtype=torch.float32),
            decoder=self.decoder.init_state(1, layout.height, layout.width),
            codebook=codebook,
        )
        return DiffusionState(tensors, correction=mode, tau=tau, seed=seed)

    def _options(self, options: Mapping[str, Any]) -> tuple[int, bool, str, float | None]:
        known = ("seed", "codebook", "codebook_mode", "codebook_tau")
        options = session_options(options, known, "diffusion")
        seed = seed_option(options, self.stream.seed)
        on = bool_option(options, "codebook", self.stream.codebook.source != "off")
        mode = options.get("codebook_mode", self.stream.codebook.mode)
        if mode not in CORRECTION_MODES:
            raise BadInputError(f"option codebook_mode must be one of {CORRECTION_MODES}")
        tau = options.get("codebook_tau")
        if tau is not None and (
            isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0
        ):
            raise BadInputError("option codebook_tau must be a positive number")
        return seed, on and self.stream.codebook.source != "off", mode, tau

    def _text(self, prompt: str | None) -> TextContext:
        """The prompt's context, shared by sessions with the same prompt."""
        with self._text_lock:
            if prompt in self._texts:
                self._texts.move_to_end(prompt)
                return self._texts[prompt]
        embedding = self.bundle.prompts.embedding(prompt)
        try:
            context = self.bundle.dit.prepare_context([embedding.to(self.bundle.device)])
        except ValueError as e:
            raise BadInputError(f"prompt cannot be used: {e}") from e
        with self._text_lock:
            self._texts[prompt] = context
            while len(self._texts) > TEXT_CACHE_SIZE:
                self._texts.popitem(last=False)
        return context

    def quality_levels(self) -> list[str]:
        """The configured schedule, then cheaper ones (no guidance, halved steps)."""
        return [describe_schedule(s) for s in self.schedules]

    def set_quality(self, level: int) -> None:
        """Sample with ``self.schedules[level]`` from the next chunk on (worker thread)."""
        self.sampler = StreamSampler(self.schedules[level])
        self.generator.sampler = self.sampler

    def interrupt(self, state: EngineState) -> None:
        _diffusion_state(state).request_restart()

    def close(self, state: EngineState) -> None:
        _diffusion_state(state).close()

    def describe(self, state: EngineState) -> dict[str, Any]:
        held = _diffusion_state(state).held
        step = self.generator.step
        out: dict[str, Any] = {
            "latent_grid": [self.layout.height, self.layout.width],
            "history_frames": held.motion.frames,
            "history_tokens": held.motion.tokens,
            "denoiser": "eager" if step is None else step.backend,
        }
        if held.codebook is not None:
            out.update(codebook_size=held.codebook.size, codebook_tau=held.codebook.tau)
        return out

    # -- chunks ---------------------------------------------------------------------------------
    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        """Generate a batch; chunks with equal latent length share every DiT forward, and on
        CUDA one group's denoising overlaps the previous group's decoding
        (:mod:`.streaming.generation`).

        Two chunks of one session in a batch run one after the other (the second conditions on
        the first)."""
        if len(batch) > self.spec.max_batch:
            raise ValueError(f"batch of {len(batch)} exceeds max_batch {self.spec.max_batch}")
        results: list[VideoChunk] = []
        start = 0
        while start < len(batch):
            seen: set[int] = set()
            stop = start
            while stop < len(batch) and id(batch[stop][0]) not in seen:
                seen.add(id(batch[stop][0]))
                stop += 1
            results.extend(self._generate_round(batch[start:stop]))
            start = stop
        return results

    def _generate_round(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        """A batch in which every session appears at most once."""
        t0 = time.perf_counter()
        plans: list[tuple[DiffusionState, AudioChunk, ChunkPlan]] = []
        for state, chunk in batch:
            s = _diffusion_state(state)
            s.begin_chunk(chunk.epoch)
            plan = plan_chunk(chunk.num_frames, s.held.decoder.first, self.frames_per_latent)
            plans.append((s, chunk, plan))
        members = group_by([plan.latents for _, _, plan in plans])
        profile = Profile(self.profile, self.bundle.device)
        done = self.generator.generate([[plans[i] for i in m] for m in members], profile)
        outputs: dict[int, ChunkOutput] = {}
        for m, outs in zip(members, done, strict=True):
            outputs.update(zip(m, outs, strict=True))
        elapsed = (time.perf_counter() - t0) * 1000.0
        results = []
        for i, (state, chunk, plan) in enumerate(plans):
            out = outputs[i]
            state.chunks += 1
            info = ChunkInfo(
                generate_ms=elapsed,
                stages_ms={part.value: ms for part, ms in profile.parts.items()},
                steps_ms=list(profile.steps),
                latent_frames=plan.latents,
                codebook_corrected=None if out.corrected is None else float(out.corrected),
            )
            results.append(
                VideoChunk(
                    frames=out.frames,
                    first_frame=chunk.first_frame,
                    start=chunk.start,
                    audio=np.array(chunk.samples, dtype=np.float32),
                    voiced=chunk.voiced,
                    epoch=chunk.epoch,
                    info=info,
                )
            )
        return results

    def shutdown(self) -> None:
        with self._text_lock:
            self._texts.clear()
        if self.bundle.device.type == "cuda":
            torch.cuda.empty_cache()


def _diffusion_state(state: EngineState) -> DiffusionState:
    if not isinstance(state, DiffusionState):
        raise BadInputError("not a diffusion engine session")
    return state

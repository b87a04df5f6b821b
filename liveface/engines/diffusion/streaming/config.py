"""Configuration of streaming generation: chunk schedule, motion frames, codebook, sampler.

Read from the ``stream`` table of a checkpoint's ``liveface.json`` (see
:mod:`..checkpoint.bundle`); the server config then sets the chunk length (``chunk_frames`` rounded
up to whole latent frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from liveface.engines.diffusion import json_config
from liveface.engines.diffusion.audio.conditioner import IDLE_MODES
from liveface.engines.diffusion.backends.compiled import COMPILE_MODES
from liveface.engines.diffusion.sampling.flow import SamplerConfig
from liveface.engines.diffusion.streaming.codebook import CodebookConfig
from liveface.engines.diffusion.streaming.motion import MotionConfig
from liveface.errors import ConfigError

DECODERS = ("auto", "vae", "light")
#: ``stream.compile`` values: ``auto`` (``reduce-overhead`` on CUDA, ``off`` on the CPU), ``off``
#: (eager PyTorch) or a ``torch.compile`` mode for the DiT denoising step.
COMPILE_CHOICES = ("auto", "off", *COMPILE_MODES)


@dataclass(frozen=True)
class GenerationConfig:
    """How the diffusion engine streams.

    Attributes:
        chunk_latents: new latent frames per chunk (``4 x`` video frames each).
        first_chunk_latents: latent frames of a session's first chunk; with the causal VAE its
            first latent frame is one video frame, so the chunk has ``1 + 4 (n - 1)`` frames
            (1 frame for ``n = 1``: the fastest first frame).
        motion: which past latent frames condition a chunk (overlap + compressed history).
        codebook: drift correction of self-generated conditions.
        sampler: the few-step schedule (distilled, 4 steps by default).
        decoder: ``light`` (the tiny TAEHV decoder), ``vae`` (the full Wan decoder) or ``auto``
            (light when the checkpoint has one).
        audio_context_ms: audio before a chunk's first needed frame that the speech encoder
            sees, so its (bidirectional) features at the chunk are stable.
        idle: ``silence`` (unvoiced chunks are conditioned on digital silence) or ``input``.
        max_batch: most chunks per ``generate`` call.
        seed: default noise seed of a session (the ``seed`` session option overrides it).
        compile: ``torch.compile`` of the DiT denoising step (see :data:`COMPILE_CHOICES`);
            ``reduce-overhead`` and ``max-autotune`` replay CUDA graphs. Compilation happens on
            the first chunk; any failure falls back to eager PyTorch with the reason logged.
    """

    chunk_latents: int = 2
    first_chunk_latents: int = 1
    motion: MotionConfig = field(default_factory=MotionConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    decoder: str = "auto"
    audio_context_ms: int = 1000
    idle: str = "silence"
    max_batch: int = 4
    seed: int = 0
    compile: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.chunk_latents < 1 or self.first_chunk_latents < 1:
            problems.append("chunk_latents and first_chunk_latents must be >= 1")
        if self.decoder not in DECODERS:
            problems.append(f"decoder must be one of {', '.join(DECODERS)}")
        if self.audio_context_ms < 0:
            problems.append("audio_context_ms must be >= 0")
        if self.idle not in IDLE_MODES:
            problems.append(f"idle must be one of {', '.join(IDLE_MODES)}")
        if self.max_batch < 1:
            problems.append("max_batch must be >= 1")
        if self.seed < 0:
            problems.append("seed must be >= 0")
        if self.compile not in COMPILE_CHOICES:
            problems.append(f"compile must be one of {', '.join(COMPILE_CHOICES)}")
        if problems:
            raise ConfigError("invalid stream config: " + "; ".join(problems))

    def compile_mode(self, device: object) -> str:
        """The ``torch.compile`` mode of the DiT step on ``device`` (``off``: eager)."""
        if self.compile != "auto":
            return self.compile
        return "reduce-overhead" if str(device).startswith("cuda") else "off"

    def replace(self, **changes: Any) -> GenerationConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["motion"] = self.motion.to_dict()
        out["codebook"] = self.codebook.to_dict()
        sampler = dataclasses.asdict(self.sampler)
        if self.sampler.timesteps is not None:
            sampler["timesteps"] = list(self.sampler.timesteps)
        out["sampler"] = sampler
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationConfig:
        values = json_config.check_keys(cls, data, "stream")
        try:
            if "motion" in values:
                values["motion"] = MotionConfig.from_dict(values["motion"])
            if "codebook" in values:
                values["codebook"] = CodebookConfig.from_dict(values["codebook"])
            if "sampler" in values:
                values["sampler"] = SamplerConfig.from_dict(values["sampler"])
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid stream config ({e})") from e

"""Configuration of data preparation, adapter training and distillation (frozen, JSON round-trip).

Each config is a frozen dataclass validated at construction with messages that name the field.
``TrainConfig.from_dict`` / ``to_dict`` round-trip through JSON (``--config FILE`` on the command
line; every run writes the config it used next to its checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from liveface.engines.diffusion import json_config
from liveface.engines.diffusion.sampling.flow import SamplerConfig
from liveface.engines.diffusion.streaming.motion import MotionConfig
from liveface.errors import ConfigError

TRAINABLE = ("adapter", "adapter+lora", "full")
PRECISIONS = ("fp32", "bf16")
LORA_TARGETS = ("self_attn", "cross_attn", "ffn")
STORAGE_DTYPES = ("float32", "bfloat16", "float16")


def _fail(what: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"invalid {what} config: " + "; ".join(problems))


@dataclass(frozen=True)
class AdapterSpec:
    """Shape of a new audio adapter (an existing ``audio_adapter.safetensors`` in the base wins).

    Attributes:
        hidden_dim: channels of its causal convolutions.
        tokens_per_frame: audio tokens per latent frame.
        kernel_size: temporal kernel of the causal convolutions (sets the warm-up the prepared
            audio must cover).
        layers: DiT blocks with audio attention; empty = every block (Soul).
        init_from_text: copy each block's text cross-attention into its audio attention (Soul).
    """

    hidden_dim: int = 512
    tokens_per_frame: int = 4
    kernel_size: int = 3
    layers: tuple[int, ...] = ()
    init_from_text: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        problems = []
        if min(self.hidden_dim, self.tokens_per_frame, self.kernel_size) < 1:
            problems.append("hidden_dim, tokens_per_frame and kernel_size must be positive")
        _fail("adapter", problems)


@dataclass(frozen=True)
class DistillSpec:
    """Consistency distillation of a guided many-step teacher into a few-step student.

    Attributes:
        guidance_scale: the teacher's audio classifier-free guidance.
        teacher_steps: the teacher's Euler steps (its ODE discretisation).
        student: the student's schedule (the engine's ``distilled`` sampler).
        ema: decay of the student's slowly moving copy that makes the targets.
        huber: pseudo-Huber constant of the loss (0: squared error).
    """

    guidance_scale: float = 4.0
    teacher_steps: int = 25
    student: SamplerConfig = field(default_factory=SamplerConfig)
    ema: float = 0.95
    huber: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.student, Mapping):
            object.__setattr__(self, "student", SamplerConfig.from_dict(self.student))
        problems = []
        if self.guidance_scale < 1:
            problems.append("guidance_scale must be >= 1")
        if self.teacher_steps < 2:
            problems.append("teacher_steps must be >= 2")
        if self.student.kind != "distilled" or self.student.guidance_scale != 1.0:
            problems.append("student must be a 'distilled' schedule without guidance")
        if not 0 <= self.ema < 1:
            problems.append("ema must be in [0, 1)")
        if self.huber < 0:
            problems.append("huber must be >= 0")
        _fail("distill", problems)

    @property
    def teacher(self) -> SamplerConfig:
        """The teacher's schedule: guided Euler on the student's timestep shift."""
        return SamplerConfig(
            kind="euler",
            steps=self.teacher_steps,
            shift=self.student.shift,
            guidance_scale=self.guidance_scale,
        )


@dataclass(frozen=True)
class TrainConfig:
    """One training (or distillation) run.

    Attributes:
        steps: optimizer steps in total (a resumed run continues to this number).
        batch_size: samples per step over all processes (a multiple of the process count).
        lr, weight_decay, betas, warmup_steps, grad_clip: AdamW and its schedule (linear
            warm-up, then constant); ``grad_clip`` 0 turns clipping off.
        trainable: ``adapter`` (the base frozen), ``adapter+lora`` (plus LoRA on the DiT's
            attention and FFN) or ``full`` (every DiT weight; for small models).
        lora_rank, lora_alpha, lora_targets: LoRA shape and where it goes.
        chunk_latents: new latent frames per sample (the engine's chunk; one latent frame is
            four video frames).
        audio_dropout, text_dropout: probability of the unconditional audio (zero tokens, what
            the engine's guidance uses) and of the empty prompt, per sample.
        shift: timestep shift of the training noise levels (as the sampler's).
        precision: ``bf16`` (frozen weights in bfloat16, autocast on CUDA) or ``fp32``.
        gradient_checkpointing: recompute each DiT block's activations in the backward pass.
        motion: the motion-frame layout (must be the engine's: it is exported with the model).
        preview: the sampler of preview videos and of an exported teacher.
        adapter: shape of a new adapter.
        distill: distillation settings (``distill`` runs only).
        seed: all randomness (noise, timesteps, dropout, data order) derives from it.
        log_every, save_every, sample_every: steps between logs, checkpoints, preview videos
            (0: never; a checkpoint is always written at the end).
        keep_checkpoints: newest checkpoints kept on disk.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    trainable: str = "adapter"
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    chunk_latents: int = 1
    audio_dropout: float = 0.1
    text_dropout: float = 0.1
    shift: float = 5.0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    motion: MotionConfig = field(default_factory=MotionConfig)
    preview: SamplerConfig = field(
        default_factory=lambda: SamplerConfig(kind="euler", steps=25, guidance_scale=4.0)
    )
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    distill: DistillSpec | None = None
    seed: int = 0
    log_every: int = 10
    save_every: int = 500
    sample_every: int = 0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        problems = []
        for name in ("steps", "batch_size", "chunk_latents", "lora_rank", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("warmup_steps", "log_every", "save_every", "sample_every", "seed"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("lr must be positive, weight_decay and grad_clip >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append("betas must be two numbers in [0, 1)")
        if self.trainable not in TRAINABLE:
            problems.append(f"trainable must be one of {', '.join(TRAINABLE)}")
        if not set(self.lora_targets) <= set(LORA_TARGETS) or not self.lora_targets:
            problems.append(f"lora_targets must be some of {', '.join(LORA_TARGETS)}")
        for name in ("audio_dropout", "text_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1]")
        if self.shift <= 0:
            problems.append("shift must be positive")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        _fail("training", problems)

    @property
    def uses_lora(self) -> bool:
        return self.trainable == "adapter+lora"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
        out["lora_targets"] = list(self.lora_targets)
        out["motion"] = self.motion.to_dict()
        out["preview"] = _sampler_dict(self.preview)
        out["adapter"] = {**dataclasses.asdict(self.adapter), "layers": list(self.adapter.layers)}
        if self.distill is not None:
            d = dataclasses.asdict(self.distill)
            d["student"] = _sampler_dict(self.distill.student)
            out["distill"] = d
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        values = json_config.check_keys(cls, data, "training")
        try:
            if "motion" in values:
                values["motion"] = MotionConfig.from_dict(values["motion"])
            if "preview" in values:
                values["preview"] = SamplerConfig.from_dict(values["preview"])
            if "adapter" in values:
                values["adapter"] = json_config.build(AdapterSpec, values["adapter"], "adapter")
            if values.get("distill") is not None:
                values["distill"] = json_config.build(DistillSpec, values["distill"], "distill")
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid training config ({e})") from e


def _sampler_dict(s: SamplerConfig) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["timesteps"] = None if s.timesteps is None else list(s.timesteps)
    return d

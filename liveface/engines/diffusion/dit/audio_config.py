"""Configuration of the audio conditioning (front end + per-block audio attention)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liveface.engines.diffusion import json_config
from liveface.engines.diffusion.dit.audio_injection import InjectionPoint
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.errors import ConfigError

ENCODER_KINDS = ("wav2vec2", "whisper")


@dataclass(frozen=True)
class AudioConfig:
    """Shapes and timing of the audio adapter.

    Attributes:
        dim: DiT width (audio tokens are made this wide).
        num_heads: heads of the audio attention.
        layers: DiT blocks that take audio.
        injection: where in those blocks (``after_cross_attn`` for Soul, ``after_block`` for S2V).
        encoder_kind: the speech encoder family, ``wav2vec2`` or ``whisper``.
        feature_dim: width of the speech encoder's hidden states.
        num_feature_layers: hidden states it returns (its layers + the embedding output); all of
            them are mixed with learned softmax weights.
        sample_rate: audio rate the encoder takes (Hz).
        feature_hop: audio samples per encoder feature (320 at 16 kHz: 50 features/s for both
            wav2vec2 and Whisper's encoder).
        fps: video frames per second.
        frames_per_latent: video frames per latent frame (the VAE's temporal compression).
        hidden_dim: channels of the causal convolutions.
        tokens_per_frame: audio tokens per latent frame.
        kernel_size: temporal kernel of the causal convolutions (>= every stride).
        qk_norm: RMS-normalise the audio attention's queries and keys.
        eps: epsilon of the norms.
    """

    dim: int
    num_heads: int
    layers: tuple[int, ...]
    feature_dim: int
    num_feature_layers: int
    injection: str = InjectionPoint.AFTER_CROSS_ATTN.value
    encoder_kind: str = "wav2vec2"
    sample_rate: int = 16000
    feature_hop: int = 320
    fps: int = 25
    frames_per_latent: int = 4
    hidden_dim: int = 512
    tokens_per_frame: int = 4
    kernel_size: int = 3
    qk_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        problems = []
        for name in (
            "dim",
            "num_heads",
            "feature_dim",
            "num_feature_layers",
            "sample_rate",
            "feature_hop",
            "fps",
            "frames_per_latent",
            "hidden_dim",
            "tokens_per_frame",
            "kernel_size",
        ):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive")
        if self.num_heads > 0 and self.dim % self.num_heads:
            problems.append(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            problems.append("layers must list distinct non-negative block indices")
        if self.injection not in {p.value for p in InjectionPoint}:
            problems.append(
                f"injection must be one of {', '.join(p.value for p in InjectionPoint)}"
            )
        if self.encoder_kind not in ENCODER_KINDS:
            problems.append(f"encoder_kind must be one of {', '.join(ENCODER_KINDS)}")
        if self.frames_per_latent > 0 and max(self.strides, default=1) > self.kernel_size:
            problems.append(
                f"kernel_size {self.kernel_size} must be >= every stride {self.strides}"
            )
        if problems:
            raise ConfigError("invalid audio config: " + "; ".join(problems))

    @property
    def point(self) -> InjectionPoint:
        return InjectionPoint(self.injection)

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the down-sampling convolutions; their product is ``frames_per_latent``."""
        n, out = self.frames_per_latent, []
        while n % 2 == 0 and n > 1:
            out.append(2)
            n //= 2
        if n > 1:
            out.append(n)
        return tuple(out)

    @classmethod
    def for_dit(cls, dit: DiTConfig, **kwargs: Any) -> AudioConfig:
        """Audio attention in every block of ``dit`` (Soul), other fields from ``kwargs``."""
        kwargs.setdefault("layers", tuple(range(dit.num_layers)))
        kwargs.setdefault("num_heads", dit.num_heads)
        kwargs.setdefault("eps", dit.eps)
        kwargs.setdefault("qk_norm", dit.qk_norm)
        return cls(dim=dit.dim, **kwargs)

    def check_fits(self, dit: DiTConfig) -> None:
        """Raise :class:`ConfigError` if this adapter cannot attach to a DiT of config ``dit``."""
        if self.dim != dit.dim:
            raise ConfigError(f"audio dim {self.dim} differs from the DiT's dim {dit.dim}")
        bad = [i for i in self.layers if i >= dit.num_layers]
        if bad:
            raise ConfigError(f"audio layers {bad} exceed the DiT's {dit.num_layers} blocks")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers)
        return out

    def to_json(self) -> str:
        return json_config.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AudioConfig:
        return json_config.build(cls, data, "audio")

    @classmethod
    def from_json(cls, text: str) -> AudioConfig:
        return cls.from_dict(json_config.parse_object(text, "audio"))

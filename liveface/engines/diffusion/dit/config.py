"""Configuration of the Wan-style DiT: a frozen, validated dataclass that round-trips through JSON.

Two JSON dialects are understood besides our own (:meth:`DiTConfig.to_json`):

- the official Wan2.2 ``config.json`` (``dim``, ``ffn_dim``, ``num_heads``, ``num_layers``,
  ``in_dim``, ``out_dim``, ``text_len``, ``freq_dim``, ``eps``, ``model_type``). The official code
  keeps ``patch_size``, ``qk_norm``, ``cross_attn_norm`` and ``text_dim`` out of that file, so
  their defaults here are the official constructor defaults;
- the diffusers ``WanTransformer3DModel`` config (``num_attention_heads``, ``attention_head_dim``,
  ``in_channels``, ``out_channels``, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liveface.engines.diffusion import json_config
from liveface.errors import ConfigError

MODEL_TYPES = ("t2v", "i2v", "ti2v", "s2v")
#: Prompt tokens of the diffusers Wan pipelines (``max_sequence_length``).
DIFFUSERS_TEXT_LEN = 512

#: Keys of the official Wan ``config.json`` that map one to one onto :class:`DiTConfig` fields.
_WAN_KEYS = (
    "dim",
    "ffn_dim",
    "num_heads",
    "num_layers",
    "in_dim",
    "out_dim",
    "text_len",
    "freq_dim",
    "eps",
    "model_type",
)


@dataclass(frozen=True)
class DiTConfig:
    """Shape and numerics of a Wan DiT.

    Attributes:
        dim: hidden size of every token.
        ffn_dim: inner size of the feed-forward layers.
        num_heads: attention heads; ``dim // num_heads`` must be even (rotary pairs).
        num_layers: transformer blocks.
        in_dim: latent channels in (48 for the Wan2.2 VAE).
        out_dim: latent channels predicted.
        text_dim: width of the text encoder's embeddings (4096 for umT5-XXL).
        text_len: text tokens the cross-attention sees; shorter prompts are zero-padded to it, as
            the official model does (the padded tokens take part in attention).
        freq_dim: width of the sinusoidal timestep embedding.
        patch_size: (frames, height, width) of one token in latent cells.
        eps: epsilon of every normalisation.
        qk_norm: RMS-normalise queries and keys (across all heads).
        cross_attn_norm: affine LayerNorm before the text cross-attention (``norm3``).
        rope_theta: base of the rotary frequencies.
        num_train_timesteps: timestep scale; ``t = sigma * num_train_timesteps``.
        model_type: the official ``model_type`` tag, kept for round trips.
        frame_causal: block-causal self-attention over token frames (a token of frame ``k`` sees
            frames ``<= k`` only), for streaming models trained that way; False for the public
            Wan2.2 weights, which attend across the whole clip.
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    num_train_timesteps: int = 1000
    model_type: str = "ti2v"
    frame_causal: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        problems = []
        for name in (
            "dim",
            "ffn_dim",
            "num_heads",
            "num_layers",
            "in_dim",
            "out_dim",
            "text_dim",
            "text_len",
            "freq_dim",
            "num_train_timesteps",
        ):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive")
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            problems.append("patch_size must be three positive integers (frames, height, width)")
        if self.num_heads > 0 and self.dim % self.num_heads:
            problems.append(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        elif self.num_heads > 0 and (self.dim // self.num_heads) % 2:
            problems.append(f"head size {self.dim // self.num_heads} must be even for rotary pairs")
        if self.freq_dim % 2:
            problems.append("freq_dim must be even (cosine and sine halves)")
        if not 0 < self.eps < 1:
            problems.append("eps must be in (0, 1)")
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type must be one of {', '.join(MODEL_TYPES)}")
        if problems:
            raise ConfigError("invalid DiT config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        """Latent cells per token."""
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    def replace(self, **changes: Any) -> DiTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- our own JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        return out

    def to_json(self) -> str:
        return json_config.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiTConfig:
        return json_config.build(cls, data, "DiT")

    @classmethod
    def from_json(cls, text: str) -> DiTConfig:
        return cls.from_dict(json_config.parse_object(text, "DiT"))

    # -- foreign dialects -----------------------------------------------------------------------
    @classmethod
    def from_wan_dict(cls, data: Mapping[str, Any]) -> DiTConfig:
        """Read an official Wan2.2 ``config.json`` (extra keys such as ``_class_name`` ignored)."""
        missing = [k for k in _WAN_KEYS if k not in data and k != "model_type"]
        if missing:
            raise ConfigError(f"Wan config.json lacks {', '.join(missing)}")
        kwargs = {k: data[k] for k in _WAN_KEYS if k in data}
        for k in ("patch_size", "qk_norm", "cross_attn_norm", "text_dim"):
            if k in data:
                kwargs[k] = data[k]
        return cls(**kwargs)

    def to_wan_dict(self) -> dict[str, Any]:
        """The official ``config.json`` content for this config."""
        out: dict[str, Any] = {"_class_name": "WanModel"}
        out.update({k: getattr(self, k) for k in _WAN_KEYS})
        # Not read by the official code, written so that a non-default value is not lost.
        out.update(
            patch_size=list(self.patch_size),
            qk_norm=self.qk_norm,
            cross_attn_norm=self.cross_attn_norm,
            text_dim=self.text_dim,
        )
        return out

    @classmethod
    def from_diffusers_dict(cls, data: Mapping[str, Any]) -> DiTConfig:
        """Read a diffusers ``WanTransformer3DModel`` config."""
        try:
            heads = int(data["num_attention_heads"])
            dim = heads * int(data["attention_head_dim"])
            qk_norm = data.get("qk_norm", "rms_norm_across_heads")
            if qk_norm not in (None, "rms_norm_across_heads"):
                raise ConfigError(f"diffusers qk_norm {qk_norm!r} is not supported")
            if data.get("added_kv_proj_dim") is not None or data.get("image_dim") is not None:
                raise ConfigError("image-conditioned (I2V 14B) diffusers models are not supported")
            return cls(
                dim=dim,
                ffn_dim=int(data["ffn_dim"]),
                num_heads=heads,
                num_layers=int(data["num_layers"]),
                in_dim=int(data["in_channels"]),
                out_dim=int(data["out_channels"]),
                text_dim=int(data.get("text_dim", 4096)),
                text_len=int(data.get("text_len", DIFFUSERS_TEXT_LEN)),
                freq_dim=int(data.get("freq_dim", 256)),
                patch_size=tuple(data.get("patch_size", (1, 2, 2))),
                eps=float(data.get("eps", 1e-6)),
                qk_norm=qk_norm is not None,
                cross_attn_norm=bool(data.get("cross_attn_norm", True)),
            )
        except KeyError as e:
            raise ConfigError(f"diffusers transformer config lacks {e}") from e

    def to_diffusers_dict(self) -> dict[str, Any]:
        """The diffusers ``WanTransformer3DModel`` config for this config.

        diffusers has no ``text_len`` (its pipeline pads prompts to 512 tokens); a different value
        is written as an extra key so that it survives a round trip.
        """
        out: dict[str, Any] = {
            "_class_name": "WanTransformer3DModel",
            "added_kv_proj_dim": None,
            "attention_head_dim": self.head_dim,
            "cross_attn_norm": self.cross_attn_norm,
            "eps": self.eps,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "in_channels": self.in_dim,
            "num_attention_heads": self.num_heads,
            "num_layers": self.num_layers,
            "out_channels": self.out_dim,
            "patch_size": list(self.patch_size),
            "qk_norm": "rms_norm_across_heads" if self.qk_norm else None,
            "text_dim": self.text_dim,
        }
        if self.text_len != DIFFUSERS_TEXT_LEN:
            out["text_len"] = self.text_len
        return out

    @classmethod
    def preset(cls, name: str) -> DiTConfig:
        """A named config: ``tiny`` (tests), ``small`` (benchmarks), ``wan2.2-ti2v-5b``."""
        try:
            return DIT_PRESETS[name]
        except KeyError:
            raise ConfigError(
                f"unknown DiT preset {name!r}; choose one of {', '.join(DIT_PRESETS)}"
            ) from None


DIT_PRESETS: Mapping[str, DiTConfig] = {
    "tiny": DiTConfig(
        dim=48,
        ffn_dim=96,
        num_heads=2,
        num_layers=2,
        in_dim=4,
        out_dim=4,
        text_dim=32,
        text_len=8,
        freq_dim=16,
    ),
    "small": DiTConfig(
        dim=256,
        ffn_dim=1024,
        num_heads=4,
        num_layers=4,
        in_dim=48,
        out_dim=48,
        text_dim=256,
        text_len=64,
        freq_dim=64,
    ),
    # The public Wan2.2-TI2V-5B checkpoint (config.json and wan/configs/wan_ti2v_5B.py).
    "wan2.2-ti2v-5b": DiTConfig(
        dim=3072,
        ffn_dim=14336,
        num_heads=24,
        num_layers=30,
        in_dim=48,
        out_dim=48,
        text_dim=4096,
        text_len=512,
        freq_dim=256,
        patch_size=(1, 2, 2),
        eps=1e-6,
        qk_norm=True,
        cross_attn_norm=True,
        model_type="ti2v",
    ),
}

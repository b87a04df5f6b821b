"""Configuration of Wan-S2V: the Wan DiT plus its speech-to-video plug-ins.

Read from the official ``config.json`` of Wan2.2-S2V-14B (``_class_name`` ``WanModel_S2V``). That
file omits ``patch_size``, ``qk_norm``, ``cross_attn_norm``, ``text_dim`` and ``window_size``, so
those take the official constructor's defaults (see :class:`~..config.DiTConfig`); fields the
official class defaults differently from ours (``in_dim``/``out_dim`` 16) are given here.

Only the variant the public checkpoint uses is built: FramePack motion (``enable_framepack``), no
transformer motioner, no TSM, no trainable token positions. A config asking for another variant is
refused by name rather than run half.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liveface.engines.diffusion import json_config
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.errors import ConfigError

#: The official ``_class_name`` of the S2V model.
S2V_CLASS = "WanModel_S2V"
#: Constructor defaults of the official ``WanModel_S2V`` for keys its ``config.json`` may omit.
_OFFICIAL_DEFAULTS: Mapping[str, Any] = {
    "in_dim": 16,
    "out_dim": 16,
    "text_len": 512,
    "freq_dim": 256,
    "eps": 1e-6,
    "text_dim": 4096,
    "cond_dim": 0,
    "audio_dim": 5120,
    "num_audio_token": 4,
    "enable_adain": False,
    "adain_mode": "attn_norm",
    "audio_inject_layers": (0, 4, 8, 12, 16, 20, 24, 27),
    "zero_timestep": False,
    "enable_motioner": True,
    "add_last_motion": True,
    "enable_tsm": False,
    "trainable_token_pos_emb": False,
    "enable_framepack": False,
    "framepack_drop_mode": "drop",
}
#: Variant switches this implementation needs set this way (name -> required value).
_REQUIRED = {
    "enable_framepack": True,
    "enable_motioner": False,
    "enable_tsm": False,
    "trainable_token_pos_emb": False,
    "adain_mode": "attn_norm",
    "add_last_motion": True,
}


@dataclass(frozen=True)
class S2VConfig:
    """Shapes of a Wan-S2V model.

    Attributes:
        dit: the backbone (``model_type`` ``s2v``).
        audio_dim: width of the speech encoder's hidden states (1024 for wav2vec2-large).
        audio_layers: hidden states mixed by ``casual_audio_encoder.weights`` (25; the official
            encoder always has 25).
        audio_tokens: local audio tokens per latent frame (a learned padding token is added).
        inject_layers: blocks after which audio cross-attention runs.
        adain: audio AdaLN (a global audio token per latent frame modulates the video tokens
            before the audio attention); without it a plain LayerNorm.
        cond_dim: channels of the pose condition (``cond_encoder``); 0: none.
        zero_timestep: reference and motion tokens are modulated with timestep 0.
        motion_frames: video frames of motion history (73: 19 latent frames).
        zip_buckets: FramePack buckets, newest first: latent frames kept at 1x, 2x and 4x
            compression.
        drop_mode: ``padd`` (the public model) or ``drop``: how dropped motion is handled.
    """

    dit: DiTConfig
    audio_dim: int = 1024
    audio_layers: int = 25
    audio_tokens: int = 4
    inject_layers: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
    adain: bool = True
    cond_dim: int = 16
    zero_timestep: bool = True
    motion_frames: int = 73
    zip_buckets: tuple[int, int, int] = (1, 2, 16)
    drop_mode: str = "padd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inject_layers", tuple(int(i) for i in self.inject_layers))
        object.__setattr__(self, "zip_buckets", tuple(int(i) for i in self.zip_buckets))
        d = self.dit
        problems = []
        if d.model_type != "s2v":
            problems.append(f"the backbone's model_type is {d.model_type!r}, not 's2v'")
        if d.dim % self.audio_tokens or d.dim % 4:
            problems.append(f"dim {d.dim} must be divisible by 4 and by audio_tokens")
        if min(self.audio_dim, self.audio_layers, self.audio_tokens, self.motion_frames) <= 0:
            problems.append("audio_dim, audio_layers, audio_tokens, motion_frames must be > 0")
        if not self.inject_layers or max(self.inject_layers) >= d.num_layers:
            problems.append(f"inject_layers {self.inject_layers} must lie in 0..{d.num_layers - 1}")
        if sorted(set(self.inject_layers)) != list(self.inject_layers):
            problems.append("inject_layers must be strictly increasing")
        if self.cond_dim < 0:
            problems.append("cond_dim must be >= 0")
        if len(self.zip_buckets) != 3 or self.zip_buckets[1] % 2 or self.zip_buckets[2] % 4:
            problems.append("zip_buckets must be 3 counts (1x, 2x even, 4x multiple of 4)")
        if self.drop_mode not in ("padd", "drop"):
            problems.append("drop_mode must be 'padd' or 'drop'")
        if d.patch_size != (1, 2, 2):
            problems.append("S2V needs patch_size (1, 2, 2) (FramePack strides assume it)")
        if problems:
            raise ConfigError("invalid S2V config: " + "; ".join(problems))

    @property
    def motion_latents(self) -> int:
        """Latent frames of motion history (the causal VAE's count for ``motion_frames``)."""
        return (self.motion_frames + 3) // 4

    @property
    def tokens_per_audio_frame(self) -> int:
        """Audio tokens per latent frame handed to the injector: local + padding (+ global)."""
        return self.audio_tokens + 1 + (1 if self.adain else 0)

    def replace(self, **changes: Any) -> S2VConfig:
        return dataclasses.replace(self, **changes)

    # -- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dit"] = self.dit.to_dict()
        out["inject_layers"] = list(self.inject_layers)
        out["zip_buckets"] = list(self.zip_buckets)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> S2VConfig:
        values = dict(data)
        if isinstance(values.get("dit"), Mapping):
            values["dit"] = DiTConfig.from_dict(values["dit"])
        return json_config.build(cls, values, "S2V")

    @classmethod
    def from_wan_dict(cls, data: Mapping[str, Any]) -> S2VConfig:
        """Read the official ``config.json`` (see the module docstring)."""
        v = {**_OFFICIAL_DEFAULTS, **data}
        wrong = [f"{k}={v[k]!r} (need {want!r})" for k, want in _REQUIRED.items() if v[k] != want]
        if wrong:
            raise ConfigError(
                "this S2V variant is not supported: " + ", ".join(wrong) + "; only the "
                "FramePack variant of the public Wan2.2-S2V-14B is implemented"
            )
        missing = [k for k in ("dim", "ffn_dim", "num_heads", "num_layers") if k not in data]
        if missing:
            raise ConfigError(f"S2V config.json lacks {', '.join(missing)}")
        dit = DiTConfig.from_wan_dict({**v, "model_type": "s2v"})
        return cls(
            dit=dit,
            audio_dim=int(v["audio_dim"]),
            audio_tokens=int(v["num_audio_token"]),
            inject_layers=tuple(v["audio_inject_layers"]),
            adain=bool(v["enable_adain"]),
            cond_dim=int(v["cond_dim"]),
            zero_timestep=bool(v["zero_timestep"]),
            motion_frames=int(v.get("motion_frames", 73)),
            drop_mode=str(v["framepack_drop_mode"]),
        )

    def to_wan_dict(self) -> dict[str, Any]:
        """The official ``config.json`` content for this config."""
        out = self.dit.to_wan_dict()
        out.update(
            _class_name=S2V_CLASS,
            audio_dim=self.audio_dim,
            num_audio_token=self.audio_tokens,
            audio_inject_layers=list(self.inject_layers),
            enable_adain=self.adain,
            adain_mode="attn_norm",
            cond_dim=self.cond_dim,
            zero_timestep=self.zero_timestep,
            enable_framepack=True,
            framepack_drop_mode=self.drop_mode,
            enable_motioner=False,
            add_last_motion=True,
            enable_tsm=False,
            trainable_token_pos_emb=False,
            motion_frames=self.motion_frames,
        )
        return out

    @classmethod
    def preset(cls, name: str) -> S2VConfig:
        """``s2v-14b`` (the public Wan2.2-S2V-14B) or ``tiny`` (tests)."""
        try:
            return S2V_PRESETS[name]
        except KeyError:
            raise ConfigError(
                f"unknown S2V preset {name!r}; choose one of {', '.join(S2V_PRESETS)}"
            ) from None


S2V_PRESETS: Mapping[str, S2VConfig] = {
    # wan/configs/wan_s2v_14B.py and the checkpoint's config.json.
    "s2v-14b": S2VConfig(
        dit=DiTConfig(
            dim=5120,
            ffn_dim=13824,
            num_heads=40,
            num_layers=40,
            in_dim=16,
            out_dim=16,
            model_type="s2v",
        ),
    ),
    # Every S2V part active, small enough for CPU tests (latent grids of 8 x 8 cells and up).
    "tiny": S2VConfig(
        dit=DiTConfig(
            dim=48,
            ffn_dim=64,
            num_heads=4,
            num_layers=3,
            in_dim=16,
            out_dim=16,
            text_dim=24,
            text_len=8,
            freq_dim=16,
            model_type="s2v",
        ),
        audio_dim=20,
        inject_layers=(0, 2),
        cond_dim=16,
    ),
}

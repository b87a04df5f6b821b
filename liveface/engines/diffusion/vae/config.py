"""Frozen, validated configs of the video VAEs, their presets, and their JSON form.

Two families:

* :class:`WanVAEConfig` - the causal 3D-conv VAEs of Wan2.1 (16 latent channels, 4x8x8) and Wan2.2
  (48 latent channels, 2x2 patchify then 4x8x8, i.e. 4x16x16). The per-channel latent mean and std
  are constants of the official code, not tensors of the checkpoint file, so they live here.
* :class:`TAEHVConfig` - the tiny TAEHV-style autoencoder (``taew2_1`` / ``taew2_2``) that
  encodes and decodes the *normalised* latents of the matching Wan VAE directly (no mean / std).

Every config round-trips through JSON (:meth:`to_json` / :func:`config_from_json`); the ``kind``
entry names the family.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from liveface.errors import ConfigError

WanLayout = Literal["wan2.1", "wan2.2"]
WAN_LAYOUTS: tuple[str, ...] = ("wan2.1", "wan2.2")

# Per-channel latent statistics from the official Wan code (wan/modules/vae2_1.py, vae2_2.py).
# Latents given to / returned by the VAE are normalised: z_norm = (z - mean) / std.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
WAN22_LATENT_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENT_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


def _fail(name: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"{name} config is invalid: " + "; ".join(problems))


@dataclass(frozen=True)
class WanVAEConfig:
    """A Wan causal video VAE.

    Attributes:
        name: preset name, informational.
        layout: ``"wan2.1"`` (flat stages, the decoder's upsampling convs halve the channels) or
            ``"wan2.2"`` (stages with parameter-free average / duplicate shortcuts around them).
        z_dim: latent channels.
        encoder_dim, decoder_dim: base channel widths (stage ``i`` has ``dim * dim_mult[i]``).
        dim_mult: channel multipliers, one per resolution level; ``len - 1`` 2x spatial resamplings.
        num_res_blocks: residual blocks per encoder stage (the decoder has one more per stage).
        temporal_downsample: per encoder resampling, whether it also halves time; the decoder
            mirrors it (reversed).
        patch_size: pixels are folded ``patch_size x patch_size`` into channels before the encoder.
        image_channels: colour channels of the video (RGB).
        norm_eps: the RMS norms' floor on the vector norm.
        latents_mean, latents_std: per-channel statistics; latents are normalised with them.
    """

    name: str
    layout: WanLayout
    z_dim: int
    encoder_dim: int
    decoder_dim: int
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 1
    image_channels: int = 3
    norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        p: list[str] = []
        if self.layout not in WAN_LAYOUTS:
            p.append(f"layout {self.layout!r} must be one of {WAN_LAYOUTS}")
        for field in ("z_dim", "encoder_dim", "decoder_dim", "num_res_blocks", "patch_size"):
            if getattr(self, field) <= 0:
                p.append(f"{field} must be positive")
        if len(self.dim_mult) < 2 or any(m <= 0 for m in self.dim_mult):
            p.append("dim_mult needs at least two positive multipliers")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            p.append(
                f"temporal_downsample needs one flag per resampling ({len(self.dim_mult) - 1})"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            p.append(f"latents_mean and latents_std need z_dim={self.z_dim} entries each")
        if any(s <= 0 for s in self.latents_std):
            p.append("latents_std entries must be positive")
        if self.layout == "wan2.1" and any(self.decoder_dim * m % 2 for m in self.dim_mult):
            p.append("wan2.1 layout halves channels when upsampling: decoder widths must be even")
        _fail(self.name, p)

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent cell along height and width (patch included)."""
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame after the first (the first latent frame is one frame)."""
        return 2 ** sum(self.temporal_downsample)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "wan", **_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True)
class TAEHVConfig:
    """A tiny TAEHV-style video autoencoder (2D convs, one frame of memory per MemBlock).

    Attributes:
        name: preset name, informational.
        latent_channels: channels of the (already normalised) latents it encodes / decodes.
        patch_size: pixel-(un)shuffle factor at the image side.
        image_channels: colour channels.
        encoder_channels: width of every encoder layer.
        decoder_channels: width of the decoder's three stages and of its last conv.
        blocks_per_stage: MemBlocks per stage (encoder and decoder).
        encoder_time_downscale: per encoder stage, whether its TPool halves time.
        decoder_time_upscale: per decoder stage, whether its TGrow doubles time; turning stages
            off (cheaper previews) keeps the weights loadable.
        decoder_space_upscale: per decoder stage, whether it upsamples 2x in space (likewise).
        latent_clamp: the decoder squashes its input with ``tanh(z / c) * c``.
    """

    name: str
    latent_channels: int
    patch_size: int = 1
    image_channels: int = 3
    encoder_channels: int = 64
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64)
    blocks_per_stage: int = 3
    encoder_time_downscale: tuple[bool, ...] = (True, True, False)
    decoder_time_upscale: tuple[bool, ...] = (False, True, True)
    decoder_space_upscale: tuple[bool, ...] = (True, True, True)
    latent_clamp: float = 3.0

    def __post_init__(self) -> None:
        p: list[str] = []
        for field in (
            "latent_channels", "patch_size", "image_channels", "encoder_channels",
            "blocks_per_stage",
        ):  # fmt: skip
            if getattr(self, field) <= 0:
                p.append(f"{field} must be positive")
        stages = len(self.decoder_time_upscale)
        if len(self.decoder_space_upscale) != stages:
            p.append("decoder_time_upscale and decoder_space_upscale need one flag per stage")
        if len(self.decoder_channels) != stages + 1 or any(c <= 0 for c in self.decoder_channels):
            p.append(f"decoder_channels needs {stages + 1} positive widths (stages + output)")
        if not self.encoder_time_downscale:
            p.append("encoder_time_downscale needs one flag per encoder stage")
        if self.latent_clamp <= 0:
            p.append("latent_clamp must be positive")
        _fail(self.name, p)

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent cell along height and width (decoder side, patch included)."""
        return self.patch_size * 2 ** sum(self.decoder_space_upscale)

    @property
    def encoder_spatial_ratio(self) -> int:
        """Pixels per latent cell on the encoder side (each encoder stage halves the size)."""
        return self.patch_size * 2 ** len(self.encoder_time_downscale)

    @property
    def encoder_temporal_ratio(self) -> int:
        """Video frames per latent frame on the encoder side."""
        return 2 ** sum(self.encoder_time_downscale)

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame after the first (the first latent frame is one frame)."""
        return 2 ** sum(self.decoder_time_upscale)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "taehv", **_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


VAEConfig = WanVAEConfig | TAEHVConfig
_KINDS: dict[str, type[WanVAEConfig] | type[TAEHVConfig]] = {
    "wan": WanVAEConfig,
    "taehv": TAEHVConfig,
}


def _plain(cfg: WanVAEConfig | TAEHVConfig) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_from_dict(data: Mapping[str, Any]) -> VAEConfig:
    """Rebuild a config from :meth:`to_dict` output (lists become tuples again)."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ConfigError(f"VAE config needs 'kind' set to one of {sorted(_KINDS)}, got {kind!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{kind} VAE config has unknown fields {unknown}; remove them")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        is_tuple = typing.get_origin(hints[key]) is tuple
        kwargs[key] = tuple(value) if is_tuple and isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{kind} VAE config is incomplete: {e}") from e


def config_from_json(text: str) -> VAEConfig:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"VAE config is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError("VAE config JSON must be an object")
    return config_from_dict(data)


def _tiny_stats(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Non-trivial statistics so that tests exercise the normalisation.
    mean = tuple(round(0.1 * (i - n / 2), 4) for i in range(n))
    std = tuple(round(0.5 + 0.1 * i, 4) for i in range(n))
    return mean, std


def _wan21() -> WanVAEConfig:
    return WanVAEConfig(
        name="wan2.1", layout="wan2.1", z_dim=16, encoder_dim=96, decoder_dim=96,
        latents_mean=WAN21_LATENT_MEAN, latents_std=WAN21_LATENT_STD,
    )  # fmt: skip


def _wan22() -> WanVAEConfig:
    return WanVAEConfig(
        name="wan2.2", layout="wan2.2", z_dim=48, encoder_dim=160, decoder_dim=256,
        patch_size=2, latents_mean=WAN22_LATENT_MEAN, latents_std=WAN22_LATENT_STD,
    )  # fmt: skip


def _wan21_tiny() -> WanVAEConfig:
    mean, std = _tiny_stats(4)
    return WanVAEConfig(
        name="wan2.1-tiny", layout="wan2.1", z_dim=4, encoder_dim=4, decoder_dim=4,
        dim_mult=(1, 2, 2, 2), latents_mean=mean, latents_std=std,
    )  # fmt: skip


def _wan22_tiny() -> WanVAEConfig:
    mean, std = _tiny_stats(6)
    return WanVAEConfig(
        name="wan2.2-tiny", layout="wan2.2", z_dim=6, encoder_dim=4, decoder_dim=8,
        dim_mult=(1, 2, 2, 2), patch_size=2, latents_mean=mean, latents_std=std,
    )  # fmt: skip


PRESETS: Mapping[str, Callable[[], VAEConfig]] = {
    "wan2.1": _wan21,
    "wan2.2": _wan22,
    "wan2.1-tiny": _wan21_tiny,
    "wan2.2-tiny": _wan22_tiny,
    "taew2_1": lambda: TAEHVConfig(name="taew2_1", latent_channels=16),
    "taew2_2": lambda: TAEHVConfig(name="taew2_2", latent_channels=48, patch_size=2),
    "taew2_1-tiny": lambda: TAEHVConfig(
        name="taew2_1-tiny", latent_channels=4, encoder_channels=8, decoder_channels=(16, 8, 8, 8)
    ),
    "taew2_2-tiny": lambda: TAEHVConfig(
        name="taew2_2-tiny",
        latent_channels=6,
        patch_size=2,
        encoder_channels=8,
        decoder_channels=(16, 8, 8, 8),
    ),
}


def preset(name: str) -> VAEConfig:
    """The config of a named preset (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown VAE preset {name!r}; choose one of {sorted(PRESETS)}") from None

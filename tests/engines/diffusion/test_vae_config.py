"""VAE configs: presets, validation messages, JSON round-trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from liveface.engines.diffusion.vae import (
    PRESETS,
    TAEHVConfig,
    WanVAEConfig,
    config_from_dict,
    config_from_json,
    preset,
)
from liveface.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name: str) -> None:
    cfg = preset(name)
    text = cfg.to_json()
    back = config_from_json(text)
    assert back == cfg
    assert type(back) is type(cfg)
    assert json.loads(back.to_json()) == json.loads(text)


def test_preset_ratios() -> None:
    wan21, wan22 = preset("wan2.1"), preset("wan2.2")
    assert isinstance(wan21, WanVAEConfig)
    assert isinstance(wan22, WanVAEConfig)
    assert (wan21.z_dim, wan21.spatial_ratio, wan21.temporal_ratio) == (16, 8, 4)
    assert (wan22.z_dim, wan22.spatial_ratio, wan22.temporal_ratio) == (48, 16, 4)
    tae21, tae22 = preset("taew2_1"), preset("taew2_2")
    assert isinstance(tae21, TAEHVConfig)
    assert isinstance(tae22, TAEHVConfig)
    assert (tae21.latent_channels, tae21.spatial_ratio, tae21.temporal_ratio) == (16, 8, 4)
    assert (tae22.latent_channels, tae22.spatial_ratio, tae22.temporal_ratio) == (48, 16, 4)
    assert tae22.encoder_spatial_ratio == 16
    assert tae22.encoder_temporal_ratio == 4


def test_official_latent_statistics_are_kept_in_the_config() -> None:
    # First / last entries as printed in wan/modules/vae2_1.py and vae2_2.py.
    wan21, wan22 = preset("wan2.1"), preset("wan2.2")
    assert isinstance(wan21, WanVAEConfig)
    assert isinstance(wan22, WanVAEConfig)
    assert (wan21.latents_mean[0], wan21.latents_std[-1]) == (-0.7571, 1.9160)
    assert (wan22.latents_mean[0], wan22.latents_std[-1]) == (-0.2289, 0.7744)
    assert len(wan22.latents_mean) == len(wan22.latents_std) == 48


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"wan2\.2"):
        preset("wan3")


def test_invalid_configs_say_what_to_fix() -> None:
    good = preset("wan2.2-tiny")
    assert isinstance(good, WanVAEConfig)
    with pytest.raises(ConfigError, match="latents_mean"):
        dataclasses.replace(good, latents_mean=(0.0,))
    with pytest.raises(ConfigError, match="temporal_downsample"):
        dataclasses.replace(good, temporal_downsample=(True,))
    with pytest.raises(ConfigError, match="layout"):
        dataclasses.replace(good, layout="wan9")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="latents_std"):
        dataclasses.replace(good, latents_std=(0.0,) * good.z_dim)
    tae = preset("taew2_1-tiny")
    assert isinstance(tae, TAEHVConfig)
    with pytest.raises(ConfigError, match="decoder_channels"):
        dataclasses.replace(tae, decoder_channels=(8, 8))
    with pytest.raises(ConfigError, match="one flag per stage"):
        dataclasses.replace(tae, decoder_space_upscale=(True,))


def test_config_from_dict_rejects_unknown_kinds_and_fields() -> None:
    data = preset("taew2_2").to_dict()
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({**data, "kind": "vqgan"})
    with pytest.raises(ConfigError, match="colour"):
        config_from_dict({**data, "colour": 1})
    with pytest.raises(ConfigError, match="incomplete"):
        config_from_dict({"kind": "wan", "name": "x"})
    with pytest.raises(ConfigError, match="JSON"):
        config_from_json("{not json")


def test_configs_are_frozen() -> None:
    cfg = preset("taew2_1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]

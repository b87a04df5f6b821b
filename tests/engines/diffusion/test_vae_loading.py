"""Checkpoint compatibility and loading: real files' key layouts, bad files, save / load."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch

from liveface.engines.diffusion.checkpoint.files import assign_state_dict
from liveface.engines.diffusion.vae import (
    TAEHV,
    TAEHVConfig,
    WanVAE,
    build_vae,
    load_vae,
    preset,
    save_vae,
)
from liveface.errors import CheckpointError

# The key layouts of the real files, as the official code builds them. How this was checked: the
# official modules were built on the meta device - ``WanVAE_`` of Wan-Video/Wan2.2
# ``wan/modules/vae2_1.py`` (dim=96, z_dim=16, temperal_downsample=[False, True, True], as its
# ``_video_vae`` / ``Wan2_1_VAE`` do) and of ``vae2_2.py`` (dim=160, dec_dim=256, z_dim=48, as
# ``Wan2_2_VAE`` does), and ``TAEHV`` of madebyollin/taehv ``taehv.py`` with the settings its
# constructor picks for "taew2_1.pth" (16 channels, patch 1) and "taew2_2.pth" (48, patch 2) - and
# the number of keys, the number of values, the sha256 of the sorted "key:shape" lines and a few
# shapes were recorded. The parameter counts also match the published file sizes (Wan2.1_VAE.pth
# ~508 MB and Wan2.2_VAE.pth ~2.8 GB of float32; the official loaders read them with
# ``load_state_dict`` strictly, so the files hold exactly these keys).
REAL_LAYOUTS = {
    "wan2.1": (
        194, 126_892_531, "d556d7ceb0c3774599d1e7c21b9fe2c6aac00b7a78c31e0e5b5922d63c23cd23",
        {
            "encoder.conv1.weight": (96, 3, 3, 3, 3),
            "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
            "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
            "encoder.head.2.weight": (32, 384, 3, 3, 3),
            "conv1.weight": (32, 32, 1, 1, 1),
            "conv2.weight": (16, 16, 1, 1, 1),
            "decoder.conv1.weight": (384, 16, 3, 3, 3),
            "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
            "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
            "decoder.middle.1.norm.gamma": (384, 1, 1),
            "decoder.head.2.weight": (3, 96, 3, 3, 3),
        },
    ),
    "wan2.2": (
        196, 704_688_668, "05803efd87377f2c0dab87f4fe69ef9cb8d23f8c3c731377d88ca3f96b838e7f",
        {
            "encoder.conv1.weight": (160, 12, 3, 3, 3),
            "encoder.downsamples.1.downsamples.0.residual.2.weight": (320, 160, 3, 3, 3),
            "encoder.downsamples.1.downsamples.2.time_conv.weight": (320, 320, 3, 1, 1),
            "encoder.head.2.weight": (96, 640, 3, 3, 3),
            "conv1.weight": (96, 96, 1, 1, 1),
            "conv2.weight": (48, 48, 1, 1, 1),
            "decoder.conv1.weight": (1024, 48, 3, 3, 3),
            "decoder.upsamples.0.upsamples.3.time_conv.weight": (2048, 1024, 3, 1, 1),
            "decoder.upsamples.2.upsamples.3.resample.1.weight": (512, 512, 3, 3),
            "decoder.head.2.weight": (12, 256, 3, 3, 3),
        },
    ),
    "taew2_1": (
        128, 11_315_539, "bb8afc4cfd186d13af56c1cee1c4574a38ab7fcaf4e1698c3ab111ce694f941c",
        {
            "encoder.0.weight": (64, 3, 3, 3),
            "encoder.2.conv.weight": (64, 128, 1, 1),
            "encoder.17.weight": (16, 64, 3, 3),
            "decoder.1.weight": (256, 16, 3, 3),
            "decoder.3.conv.0.weight": (256, 512, 3, 3),
            "decoder.7.conv.weight": (256, 256, 1, 1),
            "decoder.13.conv.weight": (256, 128, 1, 1),
            "decoder.22.weight": (3, 64, 3, 3),
        },
    ),
    "taew2_2": (
        128, 11_418_108, "31cb67e4f5111545a7387f513411a80d234bae8a6a4e34435dfd49decf8ef7a9",
        {
            "encoder.0.weight": (64, 12, 3, 3),
            "encoder.17.weight": (48, 64, 3, 3),
            "decoder.1.weight": (256, 48, 3, 3),
            "decoder.19.conv.weight": (128, 64, 1, 1),
            "decoder.22.weight": (12, 64, 3, 3),
        },
    ),
}  # fmt: skip


def layout_digest(state: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(REAL_LAYOUTS))
def test_full_size_presets_have_the_real_files_key_layout(name: str) -> None:
    count, values, digest, shapes = REAL_LAYOUTS[name]
    model = build_vae(name, device="meta")
    state = model.state_dict()
    assert len(state) == count
    assert sum(math.prod(v.shape) for v in state.values()) == values
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert layout_digest(state) == digest
    # A state dict of that layout (tensors on meta, as the real file's would be after reading)
    # loads into a freshly built full-size model without allocating anything.
    real = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    target = build_vae(name, device="meta")
    assign_state_dict(target, real, what=name)


def tiny_with_weights(name: str) -> WanVAE | TAEHV:
    torch.manual_seed(0)
    return build_vae(name)


@pytest.mark.parametrize("name", ["wan2.1-tiny", "taew2_2-tiny"])
def test_save_then_load_is_bit_exact(tmp_path: Path, name: str) -> None:
    model = tiny_with_weights(name)
    path = save_vae(model, tmp_path / "vae.safetensors")
    loaded = load_vae(path)  # the config travels in the file's metadata
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lat = torch.randn(1, model.latent_channels, 2, 2, 2)
    assert torch.equal(model.decode(lat), loaded.decode(lat))


def test_plain_pth_state_dict_loads_like_the_official_files(tmp_path: Path) -> None:
    model = tiny_with_weights("wan2.2-tiny")
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save(model.state_dict(), path)
    loaded = load_vae(path, "wan2.2-tiny", dtype=torch.float64)
    assert loaded.conv2.weight.dtype == torch.float64
    assert torch.equal(loaded.conv2.weight, model.conv2.weight.double())
    # A directory holding one weights file works too.
    assert isinstance(load_vae(tmp_path, "wan2.2-tiny"), WanVAE)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vae(tmp_path / "Wan2.2_VAE.pth", "wan2.2")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    model = tiny_with_weights("taew2_1-tiny")
    path = tmp_path / f"taew2_1{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_vae(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_vae(path, "taew2_1-tiny")


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path: Path) -> None:
    state = tiny_with_weights("wan2.1-tiny").state_dict()
    state.pop("decoder.head.2.bias")
    state["decoder.extra.weight"] = torch.zeros(1)
    state["conv2.weight"] = torch.zeros(3, 3, 1, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_vae(path, "wan2.1-tiny")
    message = str(err.value)
    assert "missing keys: decoder.head.2.bias" in message
    assert "unexpected keys: decoder.extra.weight" in message
    assert "conv2.weight (checkpoint (3, 3, 1, 1, 1)" in message
    assert "bad.pth" in message


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    path = save_vae(tiny_with_weights("taew2_1-tiny"), tmp_path / "taew2_1.safetensors")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_vae(path, "taew2_2-tiny")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_vae(path, "wan2.1-tiny")


def test_files_without_a_config_need_one(tmp_path: Path) -> None:
    model = tiny_with_weights("taew2_1-tiny")
    pth = tmp_path / "taew2_1.pth"
    torch.save(model.state_dict(), pth)
    with pytest.raises(CheckpointError, match="preset name"):
        load_vae(pth)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(CheckpointError, match="preset name"):
        load_vae(bare)
    assert isinstance(load_vae(bare, "taew2_1-tiny"), TAEHV)


def test_taehv_weights_load_with_time_upsampling_switched_off(tmp_path: Path) -> None:
    model = tiny_with_weights("taew2_1-tiny")
    path = save_vae(model, tmp_path / "taew2_1.safetensors")
    base = preset("taew2_1-tiny")
    assert isinstance(base, TAEHVConfig)
    cheap = dataclasses.replace(base, decoder_time_upscale=(False, False, True))
    loaded = load_vae(path, cheap)
    assert isinstance(loaded, TAEHV)
    assert loaded.temporal_ratio == 2
    # The switched-off TGrow keeps the rows of the last frame it used to emit.
    key = "decoder.13.conv.weight"
    rows = loaded.state_dict()[key].shape[0]
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key][-rows:])
    frames = loaded.decode(torch.randn(1, loaded.latent_channels, 3, 2, 2))
    assert frames.shape[1] == 1 + 2 * 2

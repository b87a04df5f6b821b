"""The Wan causal VAEs on tiny seeded configs: streaming equals whole clip, causality, shapes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from liveface.engines.diffusion.vae import (
    StreamingDecoder,
    VideoEncoder,
    WanVAE,
    WanVAEConfig,
    build_vae,
    frames_to_uint8,
    preset,
)

TINY = ["wan2.1-tiny", "wan2.2-tiny"]
# Streaming and whole-clip decoding run the same arithmetic in a different order (other conv
# shapes), so float32 results differ by rounding only: a few 1e-6 on outputs up to ~3 before the
# clamp. In float64 they agree to ~1e-13, which pins the semantics down.
ATOL = {torch.float32: 5e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def seeded(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> WanVAE:
    """A tiny model with seeded weights large enough that every path matters."""
    model = build_vae(name, dtype=dtype)
    assert isinstance(model, WanVAE)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in sorted(model.state_dict().items()):
            noise = torch.randn(p.shape, generator=g)
            if key.endswith("gamma"):
                p.copy_(1.0 + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.05 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return model


def latents_for(model: WanVAE, frames: int, h: int = 3, w: int = 2, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(batch, model.latent_channels, frames, h, w, generator=g)
    return lat.to(model.conv2.weight.dtype)


def video_for(model: WanVAE, frames: int, batch: int = 2) -> torch.Tensor:
    r = model.spatial_ratio
    g = torch.Generator().manual_seed(2)
    video = torch.rand(batch, frames, 2 * r, r, 3, generator=g) * 2 - 1
    return video.to(model.conv2.weight.dtype)


@pytest.mark.parametrize("name", TINY)
def test_decode_shapes_and_range(name: str) -> None:
    model = seeded(name)
    out = model.decode(latents_for(model, 3))
    r = model.spatial_ratio
    assert out.shape == (2, 1 + 4 * 2, 3 * r, 2 * r, 3)
    assert out.dtype == torch.float32
    assert out.min() >= -1.0
    assert out.max() <= 1.0
    assert out.std() > 0.05  # not a constant image


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", TINY)
def test_streaming_decode_equals_whole_clip(name: str, dtype: torch.dtype) -> None:
    model = seeded(name, dtype=dtype)
    lat = latents_for(model, 5)
    whole = model.decode(lat)
    state = model.init_state(2, 3, 2)
    parts = [model.decode_step(lat[:, :, i : i + 1], state) for i in range(5)]
    assert [p.shape[1] for p in parts] == [1, 4, 4, 4, 4]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=ATOL[dtype], rtol=0)
    # Uneven chunks (as a streaming engine may emit them) give the same frames too.
    state = model.init_state(2, 3, 2)
    chunks = [model.decode_step(lat[:, :, a:b], state) for a, b in ((0, 2), (2, 3), (3, 5))]
    assert [c.shape[1] for c in chunks] == [5, 4, 8]
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole, atol=ATOL[dtype], rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_decoded_frames_do_not_depend_on_later_latents(name: str) -> None:
    model = seeded(name)
    lat = latents_for(model, 4)
    changed = lat.clone()
    changed[:, :, 2:] += torch.randn_like(changed[:, :, 2:])
    a, b = model.decode(lat), model.decode(changed)
    kept = 1 + 4 * (2 - 1)  # frames of latents 0 and 1
    torch.testing.assert_close(a[:, :kept], b[:, :kept], atol=1e-6, rtol=0)
    assert (a[:, kept:] - b[:, kept:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", TINY)
def test_encode_portrait_and_motion_frames(name: str) -> None:
    model = seeded(name)
    portrait = model.encode(video_for(model, 1))
    assert portrait.shape == (2, model.latent_channels, 1, 2, 1)
    motion = model.encode(video_for(model, 9))
    assert motion.shape == (2, model.latent_channels, 3, 2, 1)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        model.encode(video_for(model, 8))
    with pytest.raises(ValueError, match="multiple of"):
        model.encode(video_for(model, 1)[:, :, 1:])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", TINY)
def test_chunked_encode_equals_whole_clip_and_is_causal(name: str, dtype: torch.dtype) -> None:
    model = seeded(name, dtype=dtype)
    video = video_for(model, 9)
    whole = model.encode(video)
    state = model.init_encode_state(2, video.shape[2], video.shape[3])
    parts = [model.encode_step(video[:, a:b], state) for a, b in ((0, 1), (1, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=ATOL[dtype], rtol=0)
    changed = video.clone()
    changed[:, 5:] = -changed[:, 5:]
    torch.testing.assert_close(model.encode(changed)[:, :, :2], whole[:, :, :2], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode_step(video[:, :3], state)


def test_uint8_video_equals_its_float_form() -> None:
    model = seeded("wan2.2-tiny")
    video = frames_to_uint8(video_for(model, 1))
    as_float = video.float() / 127.5 - 1.0
    torch.testing.assert_close(model.encode(video), model.encode(as_float))


def test_latents_are_normalised_with_the_config_statistics() -> None:
    model = seeded("wan2.1-tiny")
    cfg = model.config
    other_cfg = dataclasses.replace(
        cfg, latents_mean=(0.0,) * cfg.z_dim, latents_std=(1.0,) * cfg.z_dim
    )
    raw_model = WanVAE(other_cfg).eval()
    raw_model.load_state_dict(model.state_dict())
    video = video_for(model, 5)
    raw = raw_model.encode(video)
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    atol = ATOL[torch.float32]
    torch.testing.assert_close(model.encode(video), (raw - mean) / std, atol=atol, rtol=1e-5)
    # Decoding undoes the normalisation: the same raw latents give the same frames.
    frames = model.decode((raw - mean) / std)
    torch.testing.assert_close(frames, raw_model.decode(raw), atol=atol, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_stream_state_has_a_fixed_size(name: str) -> None:
    model = seeded(name)
    state = model.init_state(1, 2, 2)
    before = state.nbytes()
    ptrs = [b.data_ptr() for b in state.buffers]
    lat = latents_for(model, 6, h=2, w=2, batch=1)
    first = model.decode_step(lat[:, :, :1], state)
    for i in range(1, 6):
        model.decode_step(lat[:, :, i : i + 1], state)
    assert state.nbytes() == before == model.decoder.layout.nbytes(1, 2, 2, 4)
    assert [b.data_ptr() for b in state.buffers] == ptrs
    assert state.steps == 6
    state.reset()
    torch.testing.assert_close(model.decode_step(lat[:, :, :1], state), first, atol=0, rtol=0)


def test_mismatched_latents_are_refused() -> None:
    model = seeded("wan2.2-tiny")
    state = model.init_state(2, 3, 2)
    with pytest.raises(ValueError, match="z_dim"):
        model.decode_step(torch.zeros(2, model.latent_channels + 1, 1, 3, 2), state)
    with pytest.raises(ValueError, match="state"):
        model.decode_step(torch.zeros(2, model.latent_channels, 1, 4, 2), state)
    with pytest.raises(ValueError, match="multiple of 16"):
        model.init_encode_state(1, 24, 16)


def test_the_model_meets_the_engine_interfaces() -> None:
    model = seeded("wan2.1-tiny")
    assert isinstance(model, StreamingDecoder)
    assert isinstance(model, VideoEncoder)
    assert isinstance(model.config, WanVAEConfig)
    assert model.temporal_ratio == 4
    assert model.latent_channels == preset("wan2.1-tiny").z_dim


def test_frames_to_uint8_maps_the_range() -> None:
    frames = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert frames_to_uint8(frames).tolist() == [0, 0, 128, 255, 255, 255]


def test_bounded_memory_schedules_give_the_same_latents_and_frames() -> None:
    model = seeded("wan2.2-tiny")
    video = video_for(model, 9)
    whole = model.encode(video)
    for n in (1, 2, 5):  # 1 is the official schedule: frame 0, then 4 frames per pass
        encoded = model.encode(video, latents_per_step=n)
        torch.testing.assert_close(encoded, whole, atol=ATOL[torch.float32], rtol=0)
    lat = latents_for(model, 5)
    frames = model.decode(lat)
    for n in (1, 2):
        decoded = model.decode(lat, latents_per_step=n)
        torch.testing.assert_close(decoded, frames, atol=ATOL[torch.float32], rtol=0)
    with pytest.raises(ValueError, match="positive"):
        model.decode(lat, latents_per_step=0)

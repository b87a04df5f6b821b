"""The tiny TAEHV decoder / encoder: parallel equals streaming, causality, O(1) stream memory."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.vae import (
    TAEHV,
    StreamingDecoder,
    StreamState,
    VideoEncoder,
    build_vae,
)

TINY = ["taew2_1-tiny", "taew2_2-tiny"]
# Same arithmetic in another order: float32 differs by rounding only, float64 agrees to ~1e-14.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def seeded(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> TAEHV:
    """A tiny model with seeded weights (ReLU gain) so that outputs are not flat grey."""
    model = build_vae(name, dtype=dtype)
    assert isinstance(model, TAEHV)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.state_dict().items()):
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if p.ndim == 1 else noise * (2.0 / p[0].numel()) ** 0.5)
    return model


def latents_for(model: TAEHV, frames: int, h: int = 3, w: int = 2, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(batch, model.latent_channels, frames, h, w, generator=g)
    return lat.to(model.decoder[1].weight.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", TINY)
def test_streaming_decode_equals_parallel_decode(name: str, dtype: torch.dtype) -> None:
    model = seeded(name, dtype=dtype)
    lat = latents_for(model, 5)
    whole = model.decode(lat)
    r = model.spatial_ratio
    assert whole.shape == (2, 1 + 4 * 4, 3 * r, 2 * r, 3)
    assert whole.min() >= -1.0
    assert whole.max() <= 1.0
    assert whole.std() > 0.05
    state = model.init_state(2, 3, 2)
    parts = [model.decode_step(lat[:, :, i : i + 1], state) for i in range(5)]
    assert [p.shape[1] for p in parts] == [1, 4, 4, 4, 4]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=ATOL[dtype], rtol=0)


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


def test_streaming_memory_is_constant_over_many_steps() -> None:
    model = seeded("taew2_2-tiny")
    state = model.init_state(1, 2, 2)
    size = state.nbytes()
    ptrs = [b.data_ptr() for b in state.buffers]
    # One previous-input frame per decoder MemBlock, nothing else.
    assert len(state.buffers) == 3 * model.config.blocks_per_stage
    assert all(b.ndim == 4 for b in state.buffers)
    g = torch.Generator().manual_seed(3)
    for step in range(60):
        frames = model.decode_step(
            torch.randn(1, model.latent_channels, 1, 2, 2, generator=g), state
        )
        assert frames.shape[1] == (1 if step == 0 else 4)
        assert state.nbytes() == size
    assert [b.data_ptr() for b in state.buffers] == ptrs
    assert state.steps == 60


@pytest.mark.parametrize("name", TINY)
def test_encode_portrait_and_motion_frames(name: str) -> None:
    model = seeded(name)
    r = model.config.encoder_spatial_ratio
    g = torch.Generator().manual_seed(4)
    video = torch.rand(2, 9, 2 * r, r, 3, generator=g) * 2 - 1
    portrait = model.encode(video[:, :1])
    assert portrait.shape == (2, model.latent_channels, 1, 2, 1)
    motion = model.encode(video)
    assert motion.shape == (2, model.latent_channels, 3, 2, 1)
    stepped = model.encode(video, latents_per_step=1)
    torch.testing.assert_close(stepped, motion, atol=1e-5, rtol=0)
    # The tail pads with copies of the last frame: 9 frames encode like 12.
    padded = torch.cat([video, video[:, -1:].expand(-1, 3, -1, -1, -1)], dim=1)
    torch.testing.assert_close(model.encode(padded), motion, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiple of"):
        model.encode(video[:, :, 1:])


def test_decode_then_encode_stays_in_the_latent_shape() -> None:
    model = seeded("taew2_1-tiny")
    lat = latents_for(model, 3)
    frames = model.decode(lat)
    again = model.encode(frames)
    assert again.shape == lat.shape


def test_mismatched_latents_are_refused() -> None:
    model = seeded("taew2_1-tiny")
    state = model.init_state(2, 3, 2)
    with pytest.raises(ValueError, match="channels"):
        model.decode_step(torch.zeros(2, model.latent_channels + 1, 1, 3, 2), state)
    with pytest.raises(ValueError, match="state"):
        model.decode_step(torch.zeros(1, model.latent_channels, 1, 3, 2), state)


def test_the_model_meets_the_engine_interfaces() -> None:
    model = seeded("taew2_2-tiny")
    assert isinstance(model, StreamingDecoder)
    assert isinstance(model, VideoEncoder)
    assert (model.temporal_ratio, model.spatial_ratio) == (4, 16)


def test_streams_can_be_batched_for_a_step_and_split_again() -> None:
    # float64: batching changes float32 rounding (other conv kernels), not the arithmetic.
    model = seeded("taew2_1-tiny", dtype=torch.float64)
    lat = latents_for(model, 3)  # two streams, three latent frames each
    alone = [model.init_state(1, 3, 2) for _ in range(2)]
    expected = [
        torch.cat([model.decode_step(lat[i : i + 1, :, t : t + 1], alone[i]) for t in range(3)], 1)
        for i in range(2)
    ]
    states = [model.init_state(1, 3, 2) for _ in range(2)]
    firsts = [model.decode_step(lat[i : i + 1, :, :1], states[i]) for i in range(2)]
    batched = StreamState.stack(states)
    middle = model.decode_step(lat[:, :, 1:2], batched)
    states = batched.split([1, 1])
    lasts = [model.decode_step(lat[i : i + 1, :, 2:3], states[i]) for i in range(2)]
    for i in range(2):
        got = torch.cat([firsts[i], middle[i : i + 1], lasts[i]], dim=1)
        torch.testing.assert_close(got, expected[i], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="first call"):
        StreamState.stack([states[0], model.init_state(1, 3, 2)])

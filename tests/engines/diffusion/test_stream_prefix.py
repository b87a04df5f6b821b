"""The DiT's key/value prefix for conditioning tokens, and the per-stream-noise sampler."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.dit.rope import grid_positions
from liveface.engines.diffusion.sampling.flow import FlowMatchSampler, SamplerConfig, initial_noise
from liveface.engines.diffusion.sampling.seeded import StreamSampler

TINY = DiTConfig.preset("tiny")
SHAPE = (TINY.in_dim, 2, 4, 4)  # one sample: channels, frames, height, width


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def model(frame_causal: bool) -> WanDiT:
    torch.manual_seed(0)
    dit = WanDiT(TINY.replace(frame_causal=frame_causal))
    dit.init_weights(zero_output=False)
    return dit.eval()


def tokens(dit: WanDiT, latents: torch.Tensor) -> torch.Tensor:
    return dit.patch_grid(latents).flatten(2).transpose(1, 2)


@torch.no_grad()
def test_prefix_equals_the_block_causal_forward():
    """[reference | history | noisy] in one frame-causal pass, with per-frame timesteps
    (0, 0, t, t), gives the noisy frames' velocity that the cached prefixes give."""
    dit = model(frame_causal=True)
    g = torch.Generator().manual_seed(1)
    ref, hist, noisy = (torch.randn(1, TINY.in_dim, n, 4, 4, generator=g) for n in (1, 1, 2))
    prompt = dit.prepare_context([torch.randn(5, TINY.text_dim, generator=g)])
    full = dit(
        torch.cat([ref, hist, noisy], dim=2),
        torch.tensor([[0.0, 0.0, 700.0, 700.0]]),
        prompt,
    )[:, :, 2:]
    pos = grid_positions(4, 2, 2)
    per_frame = 4  # tokens of one latent frame (2x2 patches)
    ref_kv = dit.encode_prefix(tokens(dit, ref), pos[:per_frame], prompt)
    both = dit.encode_prefix(tokens(dit, hist), pos[per_frame : 2 * per_frame], prompt, past=ref_kv)
    assert both.tokens == 2 * per_frame
    assert ref_kv.tokens == per_frame
    fast = dit(noisy, torch.tensor([700.0]), prompt, positions=pos[2 * per_frame :], prefix=both)
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_prefix_changes_the_output_and_batches():
    dit = model(frame_causal=False)
    g = torch.Generator().manual_seed(2)
    cond = [torch.randn(1, TINY.in_dim, 1, 4, 4, generator=g) for _ in range(2)]
    noisy = torch.randn(2, TINY.in_dim, 2, 4, 4, generator=g)
    prompt = dit.prepare_context([torch.randn(5, TINY.text_dim, generator=g)])
    pos = grid_positions(3, 2, 2)
    prefixes = [dit.encode_prefix(tokens(dit, c), pos[:4], prompt) for c in cond]
    t = torch.tensor([500.0, 500.0])
    batched = dit(noisy, t, prompt, positions=pos[4:], prefix=PrefixCache.stack(prefixes))
    alone = [
        dit(noisy[i : i + 1], t[:1], prompt, positions=pos[4:], prefix=prefixes[i])
        for i in range(2)
    ]
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-5, atol=1e-6)
    plain = dit(noisy, t, prompt, positions=pos[4:])
    assert not torch.allclose(plain, batched)
    # A batch-1 prefix serves a whole batch without copies.
    shared = dit(noisy, t, prompt, positions=pos[4:], prefix=prefixes[0])
    torch.testing.assert_close(shared[:1], alone[0], rtol=1e-5, atol=1e-6)
    assert prefixes[0].expand(2).kv[0].k.stride(0) == 0
    assert prefixes[0].nbytes() == 2 * TINY.num_layers * 4 * TINY.dim * 4


def test_stream_sampler_matches_flow_match_sampler_and_is_batch_invariant():
    def denoise(x, t):
        return 0.3 * x + t[:, None, None, None, None] / 1000.0

    for kind in ("distilled", "euler"):
        cfg = SamplerConfig(kind=kind, steps=4, shift=5.0)
        stream = StreamSampler(cfg)
        g = torch.Generator().manual_seed(7)
        noise = initial_noise((1, *SHAPE), g)
        expected = FlowMatchSampler(cfg).sample(denoise, noise, generator=g)
        got = stream.sample(denoise, SHAPE, [torch.Generator().manual_seed(7)], device="cpu")
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        pair = stream.sample(
            denoise,
            SHAPE,
            [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)],
            device="cpu",
        )
        torch.testing.assert_close(pair[:1], expected, rtol=0, atol=0)
        assert not torch.equal(pair[0], pair[1])
        steps: list[int] = []
        stream.sample(denoise, SHAPE, [torch.Generator()], device="cpu", on_step=steps.append)
        assert steps == [0, 1, 2, 3]

"""The motion-frame cache: FramePack-style token layout, positions, bounded size."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.streaming.motion import (
    HistoryLevel,
    MotionCache,
    MotionConfig,
    MotionLayout,
)
from liveface.errors import ConfigError

C = 4


def layout(height=8, width=8, **changes) -> MotionLayout:
    return MotionLayout(MotionConfig(**changes), C, height, width, (2, 2))


def test_layout_counts_tokens_per_level():
    lay = layout()  # 4x4 tokens per frame; levels (2 frames, 2x), (4 frames, 4x); overlap 2
    assert lay.config.frames == 8
    assert [(s.first, s.frames, s.pool) for s in lay.segments] == [(0, 4, 4), (4, 2, 2), (6, 2, 1)]
    assert lay.history_tokens == 4 * 1 + 2 * 4 + 2 * 16
    assert lay.first_new_frame == 9
    assert lay.history_positions().shape == (lay.history_tokens, 3)
    assert lay.new_positions(2)[:, 0].unique().tolist() == [9.0, 10.0]
    assert lay.reference_positions()[:, 0].unique().tolist() == [0.0]
    # Soul's layout: reference + 2 overlap frames, no compressed history.
    soul = layout(levels=())
    assert soul.history_tokens == 2 * 16
    assert soul.first_new_frame == 3


def test_pooled_tokens_sit_at_their_windows_centres():
    lay = MotionLayout(MotionConfig(overlap=1, levels=(HistoryLevel(1, 4),)), C, 44, 80, (2, 2))
    # 22 x 40 tokens; pooling 4x4 leaves a partial last row of windows (rows 20, 21).
    assert lay.pooled_size(4) == (6, 10)
    pos = lay.history_positions()
    coarse = pos[: 6 * 10].view(6, 10, 3)
    assert coarse[0, 0].tolist() == [1.0, 1.5, 1.5]
    assert coarse[-1, -1].tolist() == [1.0, 20.5, 37.5]
    fine = pos[6 * 10 :].view(22, 40, 3)
    assert fine[3, 5].tolist() == [2.0, 3.0, 5.0]
    # A pooling window larger than the grid covers all of it.
    small = MotionLayout(MotionConfig(overlap=1, levels=(HistoryLevel(1, 4),)), C, 4, 6, (2, 2))
    assert small.pooled_size(4) == (1, 1)
    assert small.history_positions()[0].tolist() == [1.0, 0.5, 1.0]
    assert small.pool_tokens(torch.ones(1, 8, 2, 2, 3)).shape == (1, 1 + 6, 8)


def test_a_pooled_token_embeds_the_mean_of_its_windows_patches():
    """The patch embedding is linear: a token pooled over 2x2 tokens is the embedding of the
    mean of the four latent patches it covers."""
    embed = torch.nn.Conv3d(C, 8, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    lay = layout(overlap=1, levels=(HistoryLevel(1, 2),))
    latents = torch.randn(1, C, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = lay.pool_tokens(embed(latents))
        window = latents[:, :, :1, 4:8, 0:4]  # the 2x2 tokens of pooled token (1, 0)
        patches = window.unfold(3, 2, 2).unfold(4, 2, 2)  # (1, C, 1, 2, 2, 2, 2)
        mean_patch = patches.mean(dim=(3, 4))  # (1, C, 1, 2, 2)
        direct = embed(mean_patch).flatten(1)
    torch.testing.assert_close(tokens[0, 2], direct[0], rtol=1e-5, atol=1e-6)


def test_cache_keeps_the_newest_frames_oldest_first():
    lay = layout(8, 8)
    cache = MotionCache(lay, device="cpu", dtype=torch.float32)
    ref = torch.full((1, C, 1, 8, 8), -1.0)
    cache.reset(ref)
    assert torch.equal(cache.latents, ref.expand_as(cache.latents))
    for value in range(1, 4):  # three chunks of 2 frames
        cache.push(torch.full((1, C, 2, 8, 8), float(value)).index_fill(2, torch.tensor([0]), -5))
    frames = cache.latents[0, 0, :, 0, 0].tolist()
    assert frames == [-1, -1, -5, 1, -5, 2, -5, 3]
    cache.push(torch.arange(10.0).view(1, 1, 10, 1, 1).expand(1, C, 10, 8, 8))
    assert cache.latents[0, 0, :, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="do not fit"):
        cache.push(torch.zeros(1, C + 1, 1, 8, 8))


def test_cache_size_is_constant_over_10000_chunks():
    lay = layout(8, 8)
    cache = MotionCache(lay, device="cpu", dtype=torch.float32)
    cache.reset(torch.zeros(1, C, 1, 8, 8))
    nbytes, tokens, ptr = cache.nbytes(), cache.tokens, cache.latents.data_ptr()
    new = torch.randn(1, C, 2, 8, 8)
    for i in range(10_000):
        new[0, 0, 0, 0, 0] = i
        cache.push(new)
        assert cache.nbytes() == nbytes
        assert cache.tokens == tokens
    assert cache.latents.data_ptr() == ptr
    assert cache.latents.shape == (1, C, 8, 8, 8)
    assert cache.latents[0, 0, -2, 0, 0].item() == 9_999
    assert cache.pushed == 20_000
    assert nbytes == C * 8 * 8 * 8 * 4


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="overlap"):
        MotionConfig(overlap=0)
    with pytest.raises(ConfigError, match="pool"):
        MotionConfig(levels=((2, 0),))
    with pytest.raises(ConfigError, match="multiple of the patch"):
        layout(7, 8)
    assert MotionConfig.from_dict(MotionConfig().to_dict()) == MotionConfig()
    with pytest.raises(ConfigError, match="unknown"):
        MotionConfig.from_dict({"overlap": 2, "window": 3})

"""Batching sessions' chunks: grouping by key, argument trees, and one batched DiT call equal to
per-session calls."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from liveface.engines.diffusion.backends.batching import flatten, group_by, unflatten
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT


class Pair(NamedTuple):
    a: torch.Tensor
    b: int


def item(frames: int = 2, seed: int = 0, first: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(1, 3, frames, generator=g),
        "audio": AudioTokens(torch.randn(1, frames, 2, 4, generator=g), first_frame=first),
        "pair": Pair(torch.randn(1, 5, generator=g), 7),
        "flags": [True, None],
    }


def test_flatten_round_trips_dicts_dataclasses_named_tuples_and_lists():
    tree = item()
    leaves, spec = flatten(tree)
    assert len(leaves) == 3
    rebuilt = unflatten(spec, leaves)
    assert isinstance(rebuilt["audio"], AudioTokens)
    assert rebuilt["audio"].first_frame == 1
    assert isinstance(rebuilt["pair"], Pair)
    assert rebuilt["pair"].b == 7
    assert rebuilt["flags"] == [True, None]
    assert rebuilt["x"] is tree["x"]
    with pytest.raises(ValueError, match="more leaves"):
        unflatten(spec, [*leaves, torch.zeros(1)])


def test_unhashable_leaves_are_refused():
    with pytest.raises(TypeError, match="cannot batch"):
        flatten({"x": torch.zeros(1), "bad": {1, 2}})


def test_groups_follow_keys_in_order_of_first_appearance():
    keys = [2, 3, 2, (2, 0), 3, 2]
    assert group_by(keys) == [[0, 2, 5], [1, 4], [3]]
    assert group_by(keys, max_batch=2) == [[0, 2], [1, 4], [3], [5]]
    assert group_by([]) == []
    with pytest.raises(ValueError, match="max_batch"):
        group_by(keys, max_batch=0)


def test_one_batched_dit_call_per_group_matches_per_session_calls():
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    dit.eval()
    g = torch.Generator().manual_seed(3)
    context = dit.prepare_context(torch.randn(1, 8, dit.config.text_dim, generator=g))
    sessions = []
    for s, frames in enumerate((2, 2, 3, 2)):
        latents = torch.randn(1, 4, frames, 4, 4, generator=g)
        t = torch.full((1, frames), 100.0 * (s + 1))
        t[:, 0] = 0.0
        sessions.append((latents, t))
    groups = group_by([latents.shape[2] for latents, _ in sessions], max_batch=4)
    assert groups == [[0, 1, 3], [2]]  # session 2 has more frames
    out: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for members in groups:
            latents = torch.cat([sessions[i][0] for i in members])
            t = torch.cat([sessions[i][1] for i in members])
            for i, got in zip(members, dit(latents, t, context), strict=True):
                out[i] = got[None]
        for i, (latents, t) in enumerate(sessions):
            want = dit(latents, t, context)
            torch.testing.assert_close(out[i], want, atol=2e-5, rtol=1e-4)

"""Batching sessions' chunks: grouping by agreeing shapes, stacking and splitting trees, and one
batched DiT call equal to per-session calls."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from liveface.engines.diffusion.audio_injection import AudioTokens
from liveface.engines.diffusion.batching import (
    batch_size,
    flatten,
    group_indices,
    run_grouped,
    split,
    stack,
    unflatten,
)
from liveface.engines.diffusion.config import DiTConfig
from liveface.engines.diffusion.dit import WanDiT


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


def test_groups_follow_shapes_and_values_in_order_of_first_appearance():
    items = [item(2, 0), item(3, 1), item(2, 2), item(2, 3, first=0), item(3, 4), item(2, 5)]
    assert group_indices(items) == [[0, 2, 5], [1, 4], [3]]
    assert group_indices(items, max_batch=2) == [[0, 2], [1, 4], [3], [5]]
    with pytest.raises(ValueError, match="max_batch"):
        group_indices(items, max_batch=0)


def test_batch_rows_count_against_max_batch():
    big = {"x": torch.zeros(3, 2)}
    small = {"x": torch.zeros(1, 2)}
    assert batch_size(big) == 3
    assert batch_size({"none": 1}) == 1
    assert group_indices([small, big, small, small], max_batch=4) == [[0, 1], [2, 3]]


def test_stack_then_split_gives_back_the_items():
    items = [item(2, s) for s in range(3)]
    batched = stack(items)
    assert batched["x"].shape == (3, 3, 2)
    assert batched["audio"].tokens.shape == (3, 2, 2, 4)
    assert batched["pair"].b == 7
    parts = split(batched, [1, 1, 1])
    for got, want in zip(parts, items, strict=True):
        torch.testing.assert_close(got["x"], want["x"])
        torch.testing.assert_close(got["audio"].tokens, want["audio"].tokens)
        torch.testing.assert_close(got["pair"].a, want["pair"].a)
    assert stack(items[:1]) is items[0]
    with pytest.raises(ValueError, match="differ"):
        stack([item(2), item(3)])
    with pytest.raises(ValueError, match="batch 3"):
        split(torch.zeros(2, 4), [1, 2, 0])


def test_run_grouped_batches_a_tiny_dit_and_matches_per_session_calls():
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    dit.eval()
    g = torch.Generator().manual_seed(3)
    sessions = []
    for s, frames in enumerate((2, 2, 3, 2)):
        context = dit.prepare_context(torch.randn(1, 8, dit.config.text_dim, generator=g))
        latents = torch.randn(1, 4, frames, 4, 4, generator=g)
        t = torch.full((1, frames), 100.0 * (s + 1))
        t[:, 0] = 0.0
        sessions.append((latents, t, context))
    calls = []

    def step(batch):
        latents, t, context = batch
        calls.append(latents.shape[0])
        with torch.no_grad():
            return dit(latents, t, context)

    out = run_grouped(step, sessions, max_batch=4)
    assert sorted(calls) == [1, 3]  # sessions 0, 1, 3 share a call; session 2 has more frames
    for (latents, t, context), got in zip(sessions, out, strict=True):
        with torch.no_grad():
            want = dit(latents, t, context)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)

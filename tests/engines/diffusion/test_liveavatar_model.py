"""LiveAvatar's block-causal model against values recorded from their code, and its caches.

``data/liveavatar_reference.json`` comes from ``scripts/reference/record_liveavatar.py``: the same
pattern weights (``s2v_pattern.fill_pattern``) in their ``CausalWanModel_S2V``, run in float32
through six blocks of their streaming loop (sink prefilled through each of the four step caches,
4 Euler steps, the rolling cache wrapping at block 4), once with the sink fixed (their single-GPU
pipeline) and once with the reference replaced after the first clip (their multi-GPU pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from s2v_pattern import fill_pattern, wave

from liveface.engines.diffusion.backends.compiled import CompileConfig
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.rope import rotary_tables
from liveface.engines.diffusion.dit.s2v import causal as causal_module
from liveface.engines.diffusion.dit.s2v.causal import CausalS2V, half_rotary
from liveface.engines.diffusion.dit.s2v.causal_cache import CausalLayout, RollingCache, SinkCache
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.sampling.euler_discrete import euler_discrete_schedule

RECORDED = json.loads((Path(__file__).parent / "data" / "liveavatar_reference.json").read_text())
H = W = 8
SEED, BLOCKS, CLIP_LATENTS = 7, 6, 12


def close(t: torch.Tensor, name: str, rtol: float = 1e-5) -> None:
    rec = RECORDED[name]
    flat = t.detach().double().flatten()
    scale = rec["absmean"]
    assert list(t.shape) == rec["shape"]
    assert flat.mean().item() == pytest.approx(rec["mean"], abs=rtol * scale)
    assert flat.abs().mean().item() == pytest.approx(rec["absmean"], rel=rtol)
    got = flat[:: rec["step"]][: len(rec["picks"])].tolist()
    assert got == pytest.approx(rec["picks"], abs=rtol * scale), name


@pytest.fixture(scope="module")
def causal() -> CausalS2V:
    dit = WanS2VDiT(S2VConfig.preset("tiny")).eval()
    fill_pattern(dit)
    return CausalS2V(dit)


def run(causal: CausalS2V, refresh: bool) -> None:
    """Their loop, block by block, checked against every recorded flow and result."""
    mode = "refresh" if refresh else "fixed"
    dit = causal.dit
    text = dit.prepare_context([wave((5, 24), 0.41)])
    reference = wave((1, 16, 1, H, W), 0.23, 1.0)
    motion = wave((1, 16, 19, H, W), 0.11, 2.0)
    audio = wave((1, 25, 20, 2 * 48), 0.29, 0.5)
    sink = causal.prefill_sink(reference, motion, text)
    layout = causal.layout(H, W)
    caches = [causal.new_cache(layout) for _ in range(4)]
    schedule = euler_discrete_schedule(4, 3.0)
    offsets = iter(RECORDED[f"{mode} offsets"])
    first = None
    for block in range(BLOCKS):
        clip, inside = divmod(block, layout.blocks_per_clip)
        if inside == 0:
            g = torch.Generator().manual_seed(SEED + clip)
            noise = torch.randn(16, CLIP_LATENTS, H, W, generator=g)
            if clip == 1 and refresh:
                sink = causal.prefill_sink(first, motion, text)
        x = noise[None, :, 3 * inside : 3 * inside + 3]
        feats = audio[..., 12 * block : 12 * block + 12]
        tokens = AudioTokens(dit.clip_audio(feats).tokens)
        for i in range(4):
            t = schedule.timesteps[i : i + 1]
            flow = causal.step(x, t, [text], tokens, [caches[i]], [sink], [block], [next(offsets)])
            close(flow[0], f"{mode} block {block} step {i} flow")
            x = schedule.update(x, flow, i)
        close(x[0], f"{mode} block {block} latents")
        if block == 0:
            first = x[:, :, :1].clone()


@pytest.mark.parametrize("refresh", [False, True])
def test_blocks_through_the_step_caches_match_their_code(causal: CausalS2V, refresh: bool) -> None:
    run(causal, refresh)


def strong_flow(causal: CausalS2V) -> torch.Tensor:
    dit = causal.dit
    text = dit.prepare_context([wave((5, 24), 0.41)])
    sink = causal.prefill_sink(
        wave((1, 16, 1, H, W), 0.23, 1.0), wave((1, 16, 19, H, W), 0.11, 2.0), text
    )
    cache = causal.new_cache(causal.layout(H, W))
    tokens = AudioTokens(dit.clip_audio(wave((1, 25, 20, 12), 0.29, 0.5)).tokens)
    x = torch.randn(16, 3, H, W, generator=torch.Generator().manual_seed(SEED))[None]
    t = torch.tensor([700.0])
    off = RECORDED["strong offsets"]
    causal.step(x, t, [text], tokens, [cache], [sink], [0], [off[0]])
    cache.blocks = 9  # their loop jumped to block 9 (latent frame 27): the ring has wrapped
    return causal.step(x, t, [text], tokens, [cache], [sink], [9], [off[1]])[0]


def test_rounded_rope_and_cross_attention_input_match_their_numerics(monkeypatch) -> None:
    """Strong weights make the float16 RoPE table and the bfloat16 cross-attention input visible
    (without either the flow moves by 2e-4 .. 3e-4 of its scale); the whole flow is compared."""
    dit = WanS2VDiT(S2VConfig.preset("tiny")).eval()
    fill_pattern(dit, gain=4.0)
    want = torch.tensor(RECORDED["strong flow"])
    scale = want.abs().mean()
    assert (strong_flow(CausalS2V(dit)).flatten() - want).abs().max() < 2e-5 * scale
    plain = strong_flow(CausalS2V(dit, cross_attn_round=None)).flatten()
    assert (plain - want).abs().max() > 1e-4 * scale

    def exact(coords: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
        inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angle = coords.double()[..., None] * inv
        return angle.cos().float(), angle.sin().float()

    monkeypatch.setattr(causal_module, "axis_rotary", exact)
    assert (strong_flow(CausalS2V(dit)).flatten() - want).abs().max() > 1e-4 * scale


def test_the_rolling_cache_writes_in_a_ring_and_attends_to_what_is_written() -> None:
    lay = CausalLayout(rows=2, cols=2, block_frames=3, clip_frames=12)  # 12 tokens a block
    cache = RollingCache(lay, layers=1, heads=1, head_dim=2)
    spans = [cache.span(n) for n in range(7)]
    assert spans == [(0, 12), (12, 24), (24, 36), (36, 48), (0, 48), (12, 48), (24, 48)]
    with pytest.raises(ValueError, match="expecting block 0"):
        cache.check_next(1)
    with pytest.raises(ValueError, match="multiple of block_frames"):
        CausalLayout(2, 2, block_frames=5, clip_frames=12)


def test_sink_positions_move_the_reference_only() -> None:
    pos = torch.tensor([[30.0, 0, 0], [30.0, 0, 1], [-1.0, 0, 0], [-19.0, 0, 0]])
    z = torch.zeros(1, 1, 1, 2, 2)
    sink = SinkCache(z, z, torch.zeros(1, 1, 1, 4, 2), pos)
    assert torch.equal(sink.rolled_positions(0, 30, 30), pos)  # max(0, 0 - 30 + 30) = 0
    moved = sink.rolled_positions(27, 16, 30)  # 30 + (27 - 30 + 16)
    assert moved[:2, 0].tolist() == [43.0, 43.0]
    assert torch.equal(moved[2:], pos[2:])


def test_grid_tables_equal_the_tables_of_the_grid_positions(causal: CausalS2V) -> None:
    frames = torch.tensor([[27.0, 28.0, 29.0], [-3.0, 0.0, 5.0]], dtype=torch.float64)
    got = causal.grid_tables(frames, 4, 3)
    for j in range(2):
        axes = (frames[j], torch.arange(4.0).double(), torch.arange(3.0).double())
        grid = torch.meshgrid(*axes, indexing="ij")
        want = half_rotary(torch.stack(grid, -1).reshape(-1, 3), 12)
        assert torch.equal(got.cos[j], want.cos[0])
        assert torch.equal(got.sin[j], want.sin[0])


def test_half_rotary_rounds_the_table_to_float16() -> None:
    pos = torch.tensor([[5.0, 3.0, 1.0], [-19.0, 2.0, 0.0]])
    t = half_rotary(pos, 12)
    assert torch.equal(t.cos, t.cos.half().float())
    assert torch.equal(t.sin, t.sin.half().float())
    exact = rotary_tables(pos, 12)
    assert (t.cos - exact.cos).abs().max() < 1e-3
    assert not torch.equal(t.cos, exact.cos)


@torch.no_grad()
def test_cache_memory_is_constant_over_ten_thousand_blocks(causal: CausalS2V) -> None:
    """The stream position grows without bound; the caches' allocations do not (their keys are
    rewritten in place, RoPE positions are computed, not looked up in a table)."""
    dit = causal.dit
    text = dit.prepare_context([wave((5, 24), 0.41)])
    sink = causal.prefill_sink(
        wave((1, 16, 1, H, W), 0.23, 1.0), wave((1, 16, 19, H, W), 0.11, 2.0), text
    )
    cache = causal.new_cache(causal.layout(H, W))
    pointers = (cache.k.data_ptr(), cache.v.data_ptr(), cache.nbytes(), sink.nbytes())
    tokens = AudioTokens(dit.clip_audio(wave((1, 25, 20, 12), 0.29, 0.5)).tokens)
    x = wave((1, 16, 3, H, W), 0.3)
    for block in (0, 1, 2, 3, 4, 9_997, 9_998, 9_999):
        cache.blocks = block
        flow = causal.step(x, torch.tensor([500.0]), [text], tokens, [cache], [sink], [block], [30])
        assert torch.isfinite(flow).all()
    assert (cache.k.data_ptr(), cache.v.data_ptr(), cache.nbytes(), sink.nbytes()) == pointers
    assert cache.blocks == 10_000


@torch.no_grad()
def test_compiled_block_halves_give_the_eager_results(causal: CausalS2V) -> None:
    """The compile path, traced by dynamo with the eager backend (inductor's C++ build is too
    slow for a CPU test); without ``cpu=True`` nothing is compiled on the CPU."""
    plain = CausalS2V(causal.dit)
    assert plain.functions.compile(torch.device("cpu")) is not None
    assert not plain.functions.steps
    compiled = CausalS2V(causal.dit)
    config = CompileConfig(mode="default", backend="eager", warmup_runs=1, allow_new_shapes=True)
    assert compiled.functions.compile(torch.device("cpu"), config, cpu=True) is None
    outs = []
    for c in (plain, compiled):
        text = c.dit.prepare_context([wave((5, 24), 0.41)])
        sink = c.prefill_sink(
            wave((1, 16, 1, H, W), 0.23, 1.0), wave((1, 16, 19, H, W), 0.11, 2.0), text
        )
        cache = c.new_cache(c.layout(H, W))
        tokens = AudioTokens(c.dit.clip_audio(wave((1, 25, 20, 12), 0.29, 0.5)).tokens)
        x = wave((1, 16, 3, H, W), 0.3)
        t = torch.tensor([857.0])
        outs.append([c.step(x, t, [text], tokens, [cache], [sink], [n], [9]) for n in range(2)])
    assert compiled.functions.compiled
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))

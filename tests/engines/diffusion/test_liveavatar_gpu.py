"""LiveAvatar on CUDA (skipped without a device): the tiny folder with its LoRA in bfloat16 follows
float32, FP8 block weights follow bfloat16, the compiled block halves (inductor) follow eager,
and two lanes on one GPU (decode on each lane's own stream) give the frames of one lane."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from liveavatar_helpers import SIZE, chunks, speech, write_liveavatar_folder

from liveface.engines.diffusion.liveavatar_setup import create_liveavatar_engines

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_liveavatar_folder(tmp_path_factory.mktemp("LiveAvatar") / "S2V")


@torch.no_grad()
def latents(folder, dtype: str, *, fp8: bool = False, compile: bool = False) -> torch.Tensor:
    """The DiT's latents of three blocks of one session (no decode)."""
    (engine,) = create_liveavatar_engines(
        folder, width=SIZE, height=SIZE, device="cuda", dtype=dtype, fp8=fp8, compile=compile,
        lanes=1,
    )  # fmt: skip
    runner = engine.denoiser.runner
    assert runner.causal.functions.compiled == compile
    state = engine.open(None, None, {"seed": 2})
    out = []
    for c in chunks(engine.spec, speech(3.0), 3):
        a, b = engine._window(c.first_frame, c.num_frames)
        feats = engine.features.features(
            engine.parts.speech, lambda x, y, c=c: _read(c, x, y), a, b
        )
        work = state.feed.next(state.key, feats)
        runner.run([work])
        state.feed.done(work)
        out.append(work.latents.float().cpu())
    engine.close(state)
    return torch.cat(out, dim=2)


def _read(chunk, begin: int, end: int) -> np.ndarray:
    origin = chunk.start - chunk.context
    return chunk.window[begin - origin : end - origin]


def close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return bool((a - b).abs().mean() <= rel * b.abs().mean())


def test_bfloat16_fp8_and_compiled_follow_float32(folder) -> None:
    f32 = latents(folder, "float32")
    bf16 = latents(folder, "bfloat16")
    assert torch.isfinite(bf16).all()
    assert close(bf16, f32, 0.05)
    fp8 = latents(folder, "bfloat16", fp8=True)
    assert close(fp8, bf16, 0.15)
    compiled = latents(folder, "bfloat16", compile=True)
    assert close(compiled, bf16, 0.02)


def test_two_lanes_on_one_gpu_give_the_frames_of_one(folder) -> None:
    lanes = create_liveavatar_engines(folder, width=SIZE, height=SIZE, device="cuda", lanes=2)
    assert len(lanes) == 2
    assert lanes[0]._decode_stream is not None
    got = []
    for engine in lanes:
        state = engine.open(None, None, {"seed": 3})
        got.append(
            [engine.generate([(state, c)])[0].frames for c in chunks(engine.spec, speech(2.0), 2)]
        )
        engine.close(state)
    assert all(np.array_equal(a, b) for a, b in zip(*got, strict=True))

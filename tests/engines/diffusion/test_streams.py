"""Stage streams on CPU: the overlap pipeline's ordering, results equal to the sequential path, the
bounded pinned-buffer pool, device-side frame conversion."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from liveface.engines.diffusion.backends.stages import (
    Handoff,
    Overlap,
    PinnedPool,
    Stage,
    StageStreams,
    copy_to_host,
    device_frames_to_uint8,
)
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.sampling.flow import FlowMatchSampler, SamplerConfig
from liveface.engines.diffusion.vae import TAEHV, build_vae, frames_to_uint8


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


# -- stages on CPU --------------------------------------------------------------------------------


def test_cpu_stages_have_no_streams_and_handoffs_are_done():
    s = StageStreams("cpu")
    assert not s.is_cuda
    assert all(s.stream(stage) is None for stage in Stage)
    mark = s.handoff(Stage.DENOISE, Stage.DECODE, torch.zeros(2))
    assert mark.done()
    mark.wait_host()  # returns at once
    s.wait(Stage.COPY, mark)
    s.join_current(Stage.DENOISE)
    s.synchronize()


def test_stage_timing_on_cpu_is_recorded_and_drained():
    s = StageStreams("cpu", timing=True)
    for k in range(3):
        with s.run(Stage.DENOISE):
            torch.ones(8).sum()
            if k == 1:
                time.sleep(0.03)  # this block takes at least 30 ms: the timing must show it
    times = s.stage_times_ms()
    assert len(times[Stage.DENOISE]) == 3
    assert times[Stage.DENOISE][1] >= 30.0
    assert times[Stage.DECODE] == []
    assert s.stage_times_ms()[Stage.DENOISE] == []  # taken out


# -- pool -----------------------------------------------------------------------------------------


def test_pool_reuses_buffers_by_shape_and_dtype():
    pool = PinnedPool(max_free=4, pin=False)
    a = pool.acquire((2, 3), torch.uint8)
    pool.release(a)
    b = pool.acquire((2, 3), torch.uint8)
    assert b is a
    c = pool.acquire((2, 3), torch.float32)  # other dtype: a new buffer
    assert c is not a
    assert c.dtype == torch.float32
    assert pool.allocations == 2


def test_pool_keeps_at_most_max_free_buffers_dropping_the_least_recent_shape():
    pool = PinnedPool(max_free=3, pin=False)
    bufs = [pool.acquire((i + 1,), torch.uint8) for i in range(6)]
    for b in bufs:
        pool.release(b)
    assert pool.free == 3
    # The three most recently released shapes are kept.
    kept = [pool.acquire((i + 1,), torch.uint8) for i in (3, 4, 5)]
    assert [k is bufs[i] for k, i in zip(kept, (3, 4, 5), strict=True)] == [True] * 3
    assert pool.acquire((1,), torch.uint8) is not bufs[0]
    with pytest.raises(ValueError, match="max_free"):
        PinnedPool(max_free=-1)


def test_host_frames_hand_over_a_copy_and_return_the_buffer():
    streams, pool = StageStreams("cpu"), PinnedPool(max_free=2, pin=False)
    frames = torch.arange(24, dtype=torch.uint8).reshape(1, 2, 2, 2, 3)
    host = copy_to_host(streams, frames, pool, after=Handoff())
    assert host.done()
    out = host.result()
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, frames.numpy())
    assert pool.free == 1
    again = pool.acquire(tuple(frames.shape), torch.uint8)
    again.zero_()  # reusing the buffer must not change what the caller got
    assert out.sum() == frames.sum().item()
    with pytest.raises(RuntimeError, match="already taken"):
        host.result()


def test_device_frame_conversion_matches_the_vae_rounding_and_is_contiguous():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5, 1).expand(1, 1, 1, 5, 3)
    permuted = x.permute(0, 1, 3, 2, 4)  # a non-contiguous layout, as decoders return
    out = device_frames_to_uint8(permuted)
    assert out.dtype == torch.uint8
    assert out.is_contiguous()
    assert out[0, 0, :, 0, 0].tolist() == [0, 0, 128, 255, 255]
    torch.testing.assert_close(out, frames_to_uint8(permuted))


# -- overlap --------------------------------------------------------------------------------------


def _job(log: list[str], k: int, value: float):
    def denoise() -> torch.Tensor:
        log.append(f"denoise {k}")
        return torch.full((1, 2, 1, 2, 2), value)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        log.append(f"decode {k}")
        return latents.mean(1).unsqueeze(-1).expand(1, 1, 2, 2, 3).tanh()

    return denoise, decode, k


def test_overlap_returns_chunk_k_when_chunk_k_plus_1_is_submitted():
    log: list[str] = []
    pipe: Overlap[int] = Overlap(StageStreams("cpu"))
    assert pipe.submit(*_job(log, 0, 0.1)) is None
    assert pipe.pending
    for k in (1, 2):
        done = pipe.submit(*_job(log, k, 0.1 * (k + 1)))
        assert done is not None
        assert done.tag == k - 1
        # Chunk k was enqueued (denoise, then decode) before chunk k - 1 was handed out.
        assert log[-2:] == [f"denoise {k}", f"decode {k}"]
    last = pipe.flush()
    assert last is not None
    assert last.tag == 2
    assert last.frames.dtype == np.uint8
    assert last.frames.shape == (1, 1, 2, 2, 3)
    assert pipe.flush() is None
    assert not pipe.pending


def test_overlap_run_keeps_job_order_and_reuses_two_host_buffers():
    pool = PinnedPool(max_free=2, pin=False)
    pipe: Overlap[int] = Overlap(StageStreams("cpu"), pool)
    log: list[str] = []
    results = pipe.run(_job(log, k, 0.05 * k) for k in range(10))
    assert [r.tag for r in results] == list(range(10))
    assert pool.allocations <= 2
    assert pool.free <= 2
    expected = [frames_to_uint8(torch.full((1, 1, 2, 2, 3), 0.05 * k).tanh()) for k in range(10)]
    for r, e in zip(results, expected, strict=True):
        np.testing.assert_array_equal(r.frames, e.numpy())


def _tiny_models() -> tuple[WanDiT, TAEHV]:
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    vae = build_vae("taew2_1-tiny")  # 4 latent channels, like the tiny DiT
    assert isinstance(vae, TAEHV)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(vae.state_dict().items()):
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if p.ndim == 1 else noise * (2.0 / p[0].numel()) ** 0.5)
    return dit.eval(), vae.eval()


def test_overlap_on_a_tiny_model_equals_the_sequential_path():
    dit, vae = _tiny_models()
    sampler = FlowMatchSampler(SamplerConfig(kind="distilled", steps=2))
    prompt = dit.prepare_context(torch.randn(1, 8, dit.config.text_dim))
    chunks = [
        torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(k)) for k in range(3)
    ]

    def denoise_fn(noise: torch.Tensor, seed: int):
        def denoise() -> torch.Tensor:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                return sampler.sample(lambda x, t: dit(x, t, prompt), noise, generator=gen)

        return denoise

    def sequential() -> list[np.ndarray]:
        state = vae.init_state(1, 4, 4)
        out = []
        for k, noise in enumerate(chunks):
            latents = denoise_fn(noise, k)()
            out.append(frames_to_uint8(vae.decode_step(latents, state)).numpy())
        return out

    state = vae.init_state(1, 4, 4)
    pipe: Overlap[int] = Overlap(StageStreams("cpu"))
    jobs = [
        (denoise_fn(n, k), lambda z: vae.decode_step(z, state), k) for k, n in enumerate(chunks)
    ]
    got = pipe.run(jobs)
    want = sequential()
    assert [g.frames.shape for g in got] == [w.shape for w in want]
    assert got[0].frames.shape[1] == 1 + 4 * (2 - 1)  # the stream's first call
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.frames, w)

"""The GPU paths: stage streams and the overlap on CUDA, compiled steps with CUDA graphs, FP8 and
TensorRT where available. Skipped without CUDA."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from liveface.engines.diffusion.backends.compiled import CompileConfig, CompiledStep
from liveface.engines.diffusion.backends.precision import fp8_matmul, fp8_support, quantize_fp8
from liveface.engines.diffusion.backends.stages import (
    Overlap,
    PinnedPool,
    Stage,
    StageStreams,
    copy_to_host,
)
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.vae import TAEHV, build_vae, frames_to_uint8

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny_models(device: str = "cuda") -> tuple[WanDiT, TAEHV]:
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    vae = build_vae("taew2_1-tiny")
    assert isinstance(vae, TAEHV)
    return dit.eval().to(device), vae.eval().to(device)


def test_each_stage_has_its_own_stream_and_pinned_buffers():
    s = StageStreams("cuda")
    streams = [s.stream(stage) for stage in Stage]
    assert all(x is not None for x in streams)
    assert len({x.cuda_stream for x in streams if x is not None}) == len(Stage)
    pool = PinnedPool()
    assert pool.acquire((4,), torch.uint8).is_pinned()


def test_copy_to_host_waits_for_its_producer_stage():
    s, pool = StageStreams("cuda"), PinnedPool()
    with s.run(Stage.DECODE):
        frames = torch.arange(3 * 64, device="cuda").view(1, 1, 8, 8, 3).to(torch.uint8)
        frames = frames.add(1)
    host = copy_to_host(s, frames, pool, after=s.record(Stage.DECODE))
    np.testing.assert_array_equal(host.result(), frames.cpu().numpy())


def test_overlap_on_cuda_equals_the_sequential_path():
    dit, vae = tiny_models()
    context = dit.prepare_context(torch.randn(1, 8, dit.config.text_dim, device="cuda"))
    g = torch.Generator(device="cuda").manual_seed(0)
    noises = [torch.randn(1, 4, 2, 4, 4, device="cuda", generator=g) for _ in range(4)]
    t = torch.tensor([[0.0, 700.0]], device="cuda")

    @torch.no_grad()
    def denoise(noise: torch.Tensor) -> torch.Tensor:
        return noise - 0.7 * dit(noise, t, context)

    state = vae.init_state(1, 4, 4)
    want = []
    for n in noises:
        want.append(frames_to_uint8(vae.decode_step(denoise(n), state)).cpu().numpy())
    state = vae.init_state(1, 4, 4)
    pipe: Overlap[int] = Overlap(StageStreams("cuda", timing=True))
    jobs = [
        (lambda n=n: denoise(n), lambda z: vae.decode_step(z, state), k)
        for k, n in enumerate(noises)
    ]
    got = pipe.run(jobs)
    assert [r.tag for r in got] == [0, 1, 2, 3]
    for r, w in zip(got, want, strict=True):
        # Same kernels on other streams; allow a rounding flip at a .5 boundary, nothing more
        # (a race between the streams would show as whole frames of garbage).
        assert r.frames.shape == w.shape
        assert np.abs(r.frames.astype(np.int16) - w.astype(np.int16)).max() <= 1
    pipe.streams.synchronize()
    times = pipe.streams.stage_times_ms()
    assert len(times[Stage.DENOISE]) == 4
    assert len(times[Stage.COPY]) == 4


def test_reduce_overhead_cuda_graph_step_matches_eager():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    dit, _ = tiny_models()
    context = dit.prepare_context(torch.randn(1, 8, dit.config.text_dim, device="cuda"))
    latents = torch.randn(1, 4, 2, 4, 4, device="cuda")
    t = torch.tensor([[0.0, 400.0]], device="cuda")
    step = CompiledStep(dit, CompileConfig(mode="reduce-overhead"), device="cuda")
    with torch.no_grad():
        step.warm_up(latents, t, context)
        assert step.compiled, step.fallback_reason
        first = step(latents, t, context)
        second = step(latents + 1.0, t, context)  # a replay must not overwrite `first`
        torch.testing.assert_close(first, dit(latents, t, context), atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(second, dit(latents + 1.0, t, context), atol=1e-4, rtol=1e-3)


def test_fp8_matmul_on_tensor_cores_is_close_to_bfloat16():
    if not fp8_support("cuda").matmul:
        pytest.skip(fp8_support("cuda").reason)
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(256, 512, device="cuda", generator=g) * 0.05
    x = torch.randn(64, 512, device="cuda", generator=g)
    wq, scale = quantize_fp8(w)
    out = fp8_matmul(x.bfloat16(), wq, scale)
    ref = torch.nn.functional.linear(x, w)
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < 0.08


def test_tensorrt_engine_of_the_tiny_dit_step_matches_eager(tmp_path):
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed (gpu extra)")
    from liveface.engines.diffusion.backends.onnx_checks import demote_float64
    from liveface.engines.diffusion.backends.onnx_export import (
        DiTStep,
        dit_step_inputs,
        export_dit_step,
    )
    from liveface.engines.diffusion.backends.tensorrt import TrtBuildConfig, TrtRunner, build_engine

    dit, _ = tiny_models("cpu")
    inputs = dit_step_inputs(dit, latent_frames=2, latent_height=4, latent_width=4)
    graph = export_dit_step(dit, tmp_path / "dit.onnx", inputs)
    demote_float64(graph.path, tmp_path / "dit32.onnx")
    plan = build_engine(
        tmp_path / "dit32.onnx", tmp_path / "dit.plan", TrtBuildConfig(precision="float32")
    )
    runner = TrtRunner(plan)
    got = runner.run({k: v.cuda() for k, v in inputs.items()})["velocity"]
    with torch.no_grad():
        want = DiTStep(dit)(*inputs.values())
    torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=1e-3)

"""Compiled steps (eager fallback, warm-up, fixed shapes) and precision selection on CPU."""

from __future__ import annotations

import logging

import pytest
import torch

from liveface.engines.diffusion.backends import compiled as compiled_mod
from liveface.engines.diffusion.backends.compiled import (
    CompileConfig,
    CompiledStep,
    compile_unavailable,
)
from liveface.engines.diffusion.backends.precision import (
    Fp8Support,
    fp8_matmul,
    fp8_support,
    quantize_fp8,
    resolve_dtype,
    select_precision,
)
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.errors import ConfigError


def step(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2.0 + 1.0


def failing_compiler(fn, config):
    raise RuntimeError("no toolchain here")


def test_compile_config_is_validated():
    with pytest.raises(ConfigError, match="mode"):
        CompileConfig(mode="fastest")
    with pytest.raises(ConfigError, match="warmup_runs"):
        CompileConfig(warmup_runs=0)
    assert CompileConfig().cuda_graphs
    assert not CompileConfig(mode="max-autotune-no-cudagraphs").cuda_graphs
    assert not CompileConfig(backend="eager", mode="reduce-overhead").cuda_graphs


def test_unavailable_toolchain_is_reported(monkeypatch):
    assert compile_unavailable("cpu", backend="eager") is None
    monkeypatch.setattr(compiled_mod.shutil, "which", lambda name: None)
    reason = compile_unavailable("cpu")
    assert reason is not None
    assert "C++ compiler" in reason
    monkeypatch.setattr(compiled_mod.importlib.util, "find_spec", lambda name: None)
    cuda_reason = compile_unavailable("cuda")
    assert cuda_reason is not None
    assert "triton" in cuda_reason


def test_missing_toolchain_falls_back_to_eager_with_the_reason(monkeypatch, caplog):
    monkeypatch.setattr(compiled_mod.shutil, "which", lambda name: None)
    s = CompiledStep(step, CompileConfig(), device="cpu", name="denoise")
    x = torch.randn(5)
    with caplog.at_level(logging.WARNING):
        out = s.warm_up(x)
    assert s.backend == "eager"
    assert not s.compiled
    assert s.fallback_reason is not None
    assert "C++ compiler" in s.fallback_reason
    assert "denoise: running eager" in caplog.text
    torch.testing.assert_close(out, step(x))
    torch.testing.assert_close(s(x), step(x))
    assert s.warmup_seconds is not None


def test_failing_compilation_falls_back_to_eager():
    s = CompiledStep(step, device="cpu", compiler=failing_compiler)
    x = torch.randn(3)
    s.warm_up(x)
    assert s.fallback_reason == "compilation failed: RuntimeError: no toolchain here"
    torch.testing.assert_close(s(x), step(x))


def test_a_compiled_function_failing_at_its_first_run_falls_back():
    def broken(x):
        raise RuntimeError("bad kernel")

    s = CompiledStep(step, device="cpu", compiler=lambda fn, cfg: broken)
    x = torch.randn(3)
    torch.testing.assert_close(s.warm_up(x), step(x))
    assert s.fallback_reason is not None
    assert "bad kernel" in s.fallback_reason


def test_bad_inputs_raise_without_dropping_the_compiled_step():
    calls = []

    def compiled(x):
        calls.append(tuple(x.shape))
        return step(x)

    s = CompiledStep(step, device="cpu", compiler=lambda fn, cfg: compiled)
    s.warm_up(torch.randn(4))
    with pytest.raises(TypeError):
        s("not a tensor")
    assert s.compiled


def test_new_shapes_after_the_warm_up_run_eagerly_unless_allowed():
    seen = []

    def compiled(x):
        seen.append(tuple(x.shape))
        return step(x)

    s = CompiledStep(step, CompileConfig(warmup_runs=2), device="cpu",
                     compiler=lambda fn, cfg: compiled)  # fmt: skip
    s.warm_up(torch.randn(4))
    s(torch.randn(4))
    s(torch.randn(6))  # not warmed up: eager, no compilation in the hot path
    assert seen == [(4,), (4,), (4,)]
    relaxed = CompiledStep(step, CompileConfig(allow_new_shapes=True), device="cpu",
                           compiler=lambda fn, cfg: compiled)  # fmt: skip
    relaxed.warm_up(torch.randn(4))
    relaxed(torch.randn(6))
    assert seen[-1] == (6,)


def test_torch_compile_traces_a_tiny_dit_step_with_the_eager_backend():
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    dit.eval()
    latents = torch.randn(1, 4, 2, 4, 4)
    t = torch.tensor([[0.0, 500.0]])
    context = dit.prepare_context(torch.randn(1, 8, 32))
    s = CompiledStep(dit, CompileConfig(backend="eager", warmup_runs=1), device="cpu")
    with torch.no_grad():
        s.warm_up(latents, t, context)
        got, want = s(latents, t, context), dit(latents, t, context)
    assert s.backend == "compiled:eager"
    torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_inductor_compiles_a_tiny_dit_step_on_cpu():
    if compile_unavailable("cpu") is not None:
        pytest.skip(compile_unavailable("cpu"))
    torch.manual_seed(0)
    dit = WanDiT(DiTConfig.preset("tiny"))
    dit.init_weights(zero_output=False)
    dit.eval()
    latents, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([300.0])
    context = dit.prepare_context(torch.randn(1, 8, 32))
    s = CompiledStep(dit, CompileConfig(mode="default", warmup_runs=1), device="cpu")
    with torch.no_grad():
        s.warm_up(latents, t, context)
        got, want = s(latents, t, context), dit(latents, t, context)
    assert s.backend == "compiled:inductor:default", s.fallback_reason
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# -- precision ------------------------------------------------------------------------------------


def test_dtype_names_resolve_and_unknown_ones_say_what_to_use():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("BFloat16") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="bfloat16"):
        resolve_dtype("int4")
    with pytest.raises(ConfigError, match="not supported"):
        resolve_dtype(torch.int8)


def test_bfloat16_is_the_default_and_fp8_is_off_unless_asked():
    p = select_precision(device="cpu")
    assert (p.dtype, p.fp8, p.note) == (torch.bfloat16, False, "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only expectations")
def test_fp8_requested_without_a_gpu_is_refused_with_a_reason():
    support = fp8_support("cpu")
    assert support == Fp8Support(storage=True, matmul=False, reason="FP8 matmuls need a CUDA GPU")
    p = select_precision("bf16", fp8=True, device="cpu")
    assert not p.fp8
    assert "FP8 off" in p.note


def test_fp8_capability_threshold(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    low = fp8_support("cuda")
    assert not low.matmul
    assert "8.6 < 8.9" in low.reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8_support("cuda").matmul == hasattr(torch, "_scaled_mm")


def test_fp8_quantisation_and_weight_only_matmul_on_cpu():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g) * 0.05
    x = torch.randn(3, 5, 64, generator=g)
    bias = torch.randn(32, generator=g)
    wq, scale = quantize_fp8(w)
    assert wq.dtype == torch.float8_e4m3fn
    assert scale.dim() == 0
    rel = ((wq.float() * scale - w).abs().max() / w.abs().max()).item()
    assert rel < 0.07  # e4m3 keeps 3 mantissa bits
    out = fp8_matmul(x, wq, scale, bias=bias, out_dtype=torch.float32)
    assert out.shape == (3, 5, 32)
    ref = torch.nn.functional.linear(x, w, bias)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 0.05

"""Numeric precision of the GPU steps: bfloat16 by default, FP8 only where the GPU has it.

FP8 matmuls need tensor cores of compute capability 8.9 (Ada) or 9.0 (Hopper) and up, a PyTorch
with the ``float8_e4m3fn`` dtype, and ``torch._scaled_mm``. Without ``_scaled_mm`` FP8 can still
*store* weights (half the memory of bf16) and dequantise them before a bf16 matmul. FP8 is off
unless asked for; when asked for and unavailable, :func:`select_precision` says why and keeps the
compute dtype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from liveface.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
#: Largest finite value of float8 e4m3 (the format for weights and activations).
FP8_E4M3_MAX = 448.0
#: First compute capability with FP8 tensor cores (Ada Lovelace).
FP8_MIN_CAPABILITY = (8, 9)


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"``, ``"bfloat16"``, ``torch.bfloat16``... -> the dtype."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ConfigError(f"compute dtype {name} is not supported; use bfloat16")
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown compute dtype {name!r}; choose one of bfloat16, float16, float32"
        ) from None


@dataclass(frozen=True)
class Fp8Support:
    """What FP8 the device offers.

    Attributes:
        storage: float8 tensors can be created and cast (weights stored in FP8).
        matmul: FP8 matrix multiplies run on tensor cores (``torch._scaled_mm`` on capability
            >= 8.9).
        reason: why ``matmul`` is False ("" when it is True).
    """

    storage: bool
    matmul: bool
    reason: str = ""


def fp8_support(device: torch.device | str | None = None) -> Fp8Support:
    """Detect FP8 on ``device`` (the current CUDA device when None; CPU has storage at most)."""
    storage = hasattr(torch, "float8_e4m3fn")
    if not storage:
        return Fp8Support(False, False, f"torch {torch.__version__} has no float8 dtypes")
    dev = torch.device(device) if device is not None else None
    if (dev is not None and dev.type != "cuda") or not torch.cuda.is_available():
        return Fp8Support(True, False, "FP8 matmuls need a CUDA GPU")
    capability = torch.cuda.get_device_capability(dev)
    if capability < FP8_MIN_CAPABILITY:
        need = ".".join(map(str, FP8_MIN_CAPABILITY))
        return Fp8Support(
            True,
            False,
            f"compute capability {capability[0]}.{capability[1]} < {need} has no FP8 tensor cores",
        )
    if not hasattr(torch, "_scaled_mm"):
        return Fp8Support(True, False, f"torch {torch.__version__} has no torch._scaled_mm")
    return Fp8Support(True, True)


@dataclass(frozen=True)
class Precision:
    """The precision the steps run in.

    Attributes:
        dtype: compute dtype of weights and activations (norms and the head stay float32).
        fp8: FP8 matmuls where the backend supports them (TensorRT builder flag,
            :func:`fp8_matmul`).
        note: why the request was changed, "" when it was granted as asked.
    """

    dtype: torch.dtype = torch.bfloat16
    fp8: bool = False
    note: str = ""


def select_precision(
    requested: str | torch.dtype = "bfloat16",
    *,
    fp8: bool = False,
    device: torch.device | str = "cuda",
) -> Precision:
    """The precision to use on ``device``: ``requested`` where it can run, FP8 only if asked for
    and supported; a changed request is logged with its reason."""
    dtype = resolve_dtype(requested)
    dev = torch.device(device)
    notes = []
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    if cuda and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
        notes.append("the GPU has no bfloat16; using float16")
    use_fp8 = False
    if fp8:
        support = fp8_support(dev)
        use_fp8 = support.matmul
        if not use_fp8:
            notes.append(f"FP8 off: {support.reason}")
    note = "; ".join(notes)
    if note:
        log.warning("precision: %s", note)
    return Precision(dtype=dtype, fp8=use_fp8, note=note)


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled cast to float8 e4m3: returns ``(x_fp8, scale)`` with
    ``x ~= x_fp8.float() * scale``; ``scale`` is a float32 scalar tensor (no host sync)."""
    if not hasattr(torch, "float8_e4m3fn"):
        raise ConfigError(f"torch {torch.__version__} has no float8 dtypes; upgrade torch")
    amax = x.detach().abs().amax().float().clamp(min=1e-12)
    scale = amax / FP8_E4M3_MAX
    q = (x.float() / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_matmul(
    x: torch.Tensor,
    weight_fp8: torch.Tensor,
    weight_scale: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``x @ W.T + bias`` with an FP8 weight, like :func:`torch.nn.functional.linear`.

    Args:
        x: ``(..., in_features)``.
        weight_fp8: float8 e4m3 ``(out_features, in_features)`` from :func:`quantize_fp8`.
        weight_scale: its float32 scalar scale.

    Returns:
        ``(..., out_features)`` in ``out_dtype``. On FP8 tensor cores the activations are
        quantised per tensor and ``torch._scaled_mm`` multiplies; elsewhere the weight is
        dequantised and the matmul runs in ``out_dtype`` (weight-only FP8).
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    usable = (
        x.device.type == "cuda"
        and fp8_support(x.device).matmul
        and x2.shape[-1] % 16 == 0
        and weight_fp8.shape[0] % 16 == 0
    )
    if usable:
        xq, x_scale = quantize_fp8(x2)
        out = torch._scaled_mm(
            xq,
            weight_fp8.t(),
            scale_a=x_scale,
            scale_b=weight_scale.float(),
            bias=None if bias is None else bias.to(out_dtype),
            out_dtype=out_dtype,
        )
    else:
        w = (weight_fp8.float() * weight_scale).to(out_dtype)
        b = None if bias is None else bias.to(out_dtype)
        out = torch.nn.functional.linear(x2.to(out_dtype), w, b)
    return out.reshape(*lead, out.shape[-1])

"""Checks of exported ONNX graphs: parity with eager PyTorch (onnxruntime), and the float64 to
float32 rewrite TensorRT needs (:mod:`.onnx_export` writes the graphs)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from liveface.errors import ConfigError

if TYPE_CHECKING:
    from liveface.engines.diffusion.backends.onnx_export import ExportedGraph


@dataclass(frozen=True)
class ParityReport:
    """onnxruntime against eager PyTorch: largest absolute difference per output."""

    max_abs: Mapping[str, float]
    onnx_ms: float
    torch_ms: float

    @property
    def worst(self) -> float:
        return max(self.max_abs.values())


def _ort_session(path: Path | bytes) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("the ONNX parity check needs onnxruntime: pip install onnxruntime") from e
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_parity(
    graph: ExportedGraph | Path | bytes,
    module: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str] | None = None,
) -> ParityReport:
    """Run the ONNX graph with onnxruntime (CPU) and ``module`` eagerly on the same inputs."""
    source = graph if isinstance(graph, Path | bytes) else graph.path
    session = _ort_session(source)
    feeds = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    start = time.perf_counter()
    got = session.run(None, feeds)
    onnx_ms = (time.perf_counter() - start) * 1000.0
    start = time.perf_counter()
    with torch.no_grad():
        want = module(*inputs.values())
    torch_ms = (time.perf_counter() - start) * 1000.0
    want_list = list(want) if isinstance(want, (tuple, list)) else [want]
    names = list(output_names or [o.name for o in session.get_outputs()])
    diffs = {}
    for name, a, b in zip(names, got, want_list, strict=True):
        b_np = b.detach().cpu().float().numpy() if b.dtype != torch.uint8 else b.cpu().numpy()
        if a.shape != b_np.shape:
            raise ValueError(f"output {name}: onnx {a.shape} vs torch {b_np.shape}")
        diffs[name] = float(np.abs(a.astype(np.float64) - b_np.astype(np.float64)).max())
    return ParityReport(diffs, onnx_ms, torch_ms)


def demote_float64(src: str | Path, dst: str | Path) -> int:
    """Rewrite float64 arithmetic of an ONNX graph to float32 (TensorRT has no float64).

    Casts to double become casts to float, double constants and initialisers become float.
    Returns the number of nodes and tensors changed. Check the result with :func:`check_parity`.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ConfigError("editing ONNX graphs needs onnx: pip install 'liveface[gpu]'") from e
    model = onnx.load(str(src))
    double, single = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    changed = 0

    def demote(t: Any) -> None:
        nonlocal changed
        if t.data_type == double:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
            changed += 1

    for init in model.graph.initializer:
        demote(init)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == double:
                attr.i = single
                changed += 1
            elif attr.type == onnx.AttributeProto.TENSOR:
                demote(attr.t)
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if value.type.tensor_type.elem_type == double:
            value.type.tensor_type.elem_type = single
    onnx.save(model, str(dst))
    return changed

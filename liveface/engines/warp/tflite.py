"""Run a TFLite model that contains MediaPipe's custom operators on LiteRT (``ai-edge-litert``).

The face-mesh model with attention uses three MediaPipe operators (``Landmarks2TransformMatrix``,
``TransformTensorBilinear``, ``TransformLandmarks``, all version 2) that LiteRT does not ship and
its Python interpreter cannot register. So the graph is cut: every tensor gets a *level*, the number
of custom operators upstream of it; the builtin operators of one level form a sub-model run by a
LiteRT interpreter (same XNNPACK kernels as MediaPipe), and the custom operators run in numpy
between the levels. Models without custom operators run whole.

LiteRT is imported here only, and only when a model is loaded (a session opens), never at import
time of the package.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from liveface.engines.warp import model_cache

#: A custom operator: ``(inputs, options) -> output``; options are the op's flexbuffer map.
CustomOp = Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]


def _f32(x: float) -> np.float32:
    return np.float32(x)


def landmarks_to_transform_matrix(inputs: list[np.ndarray], opts: dict[str, Any]) -> np.ndarray:
    """MediaPipe ``Landmarks2TransformMatrix`` v2: landmarks ``(1, n, 3)`` -> affine ``(1, 4, 4)``.

    The matrix maps pixel (x, y) of an ``output_width x output_height`` crop to landmark units: a
    crop centred on the subset's box, rotated so that the two rotation landmarks lie level, scaled
    by ``scale_x/scale_y`` times the box size (computed in float32 like the C++ kernel).
    """
    lm = inputs[0].reshape(-1, 3)[:, :2].astype(np.float32)
    left, right = lm[int(opts["left_rotation_idx"])], lm[int(opts["right_rotation_idx"])]
    rot = _f32(opts["target_rotation_radians"]) - np.arctan2(
        right[1] - left[1], right[0] - left[0], dtype=np.float32
    )
    pts = lm[np.asarray(opts["subset_idxs"], np.int64)]
    c, s = np.cos(rot, dtype=np.float32), np.sin(rot, dtype=np.float32)
    xr = c * pts[:, 0] - s * pts[:, 1]
    yr = s * pts[:, 0] + c * pts[:, 1]
    width, height = xr.max() - xr.min(), yr.max() - yr.min()
    mx, my = (xr.min() + xr.max()) / 2, (yr.min() + yr.max()) / 2
    # back to landmark units: rotate the box centre by -rot
    cx, cy = c * mx + s * my, -s * mx + c * my
    out_w, out_h = _f32(opts["output_width"]), _f32(opts["output_height"])
    sx = _f32(opts["scale_x"]) * width / out_w
    sy = _f32(opts["scale_y"]) * height / out_h
    # T = shift(centre) @ rotate(-rot) @ scale(sx, sy) @ shift(-out/2)
    m = np.eye(4, dtype=np.float32)
    m[0, :2] = (c * sx, s * sy)
    m[1, :2] = (-s * sx, c * sy)
    m[0, 3] = cx - (c * sx * out_w / 2 + s * sy * out_h / 2)
    m[1, 3] = cy - (-s * sx * out_w / 2 + c * sy * out_h / 2)
    return m[None]


def transform_tensor_bilinear(inputs: list[np.ndarray], opts: dict[str, Any]) -> np.ndarray:
    """MediaPipe ``TransformTensorBilinear`` v2: sample ``(1, h, w, c)`` through an affine.

    Output pixel (x, y) of ``(1, output_height, output_width, c)`` reads the input at
    ``matrix @ (x + 0.5, y + 0.5) - 0.5`` (pixel centres), bilinearly; a sample point outside the
    input gives 0 in every channel, and taps past the last row/column read 0.
    """
    data = inputs[0][0].astype(np.float32)
    mat = inputs[1].reshape(4, 4).astype(np.float32)
    h, w = data.shape[:2]
    oh, ow = int(opts["output_height"]), int(opts["output_width"])
    yy, xx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    tx = mat[0, 0] * xx + mat[0, 1] * yy + (mat[0, 3] + (mat[0, 0] + mat[0, 1]) * 0.5 - 0.5)
    ty = mat[1, 0] * xx + mat[1, 1] * yy + (mat[1, 3] + (mat[1, 0] + mat[1, 1]) * 0.5 - 0.5)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = (tx - x0)[..., None], (ty - y0)[..., None]
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    padded = np.zeros((h + 2, w + 2, data.shape[2]), np.float32)
    padded[1:-1, 1:-1] = data  # one zero ring: taps at -1 or at h/w read 0

    def tap(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        return padded[np.clip(yi + 1, 0, h + 1), np.clip(xi + 1, 0, w + 1)]

    upper = (1 - fx) * tap(y0i, x0i) + fx * tap(y0i, x0i + 1)
    lower = (1 - fx) * tap(y0i + 1, x0i) + fx * tap(y0i + 1, x0i + 1)
    out = fy * lower + (1 - fy) * upper
    return np.where(inside[..., None], out, np.float32(0))[None].astype(np.float32)


def transform_landmarks(inputs: list[np.ndarray], opts: dict[str, Any]) -> np.ndarray:
    """MediaPipe ``TransformLandmarks`` v2: 2-D landmarks ``(1, n, 2)`` through ``(1, 4, 4)``."""
    lm = inputs[0].astype(np.float32)
    mat = inputs[1].reshape(4, 4).astype(np.float32)
    x, y = lm[..., 0], lm[..., 1]
    out = np.stack(
        [mat[0, 0] * x + mat[0, 1] * y + mat[0, 3], mat[1, 0] * x + mat[1, 1] * y + mat[1, 3]],
        axis=-1,
    )
    return out.astype(np.float32)


#: The MediaPipe operators of the face-mesh model with attention, by custom code.
MEDIAPIPE_OPS: Mapping[str, CustomOp] = {
    "Landmarks2TransformMatrix": landmarks_to_transform_matrix,
    "TransformTensorBilinear": transform_tensor_bilinear,
    "TransformLandmarks": transform_landmarks,
}


class TfliteGraph:
    """A single-subgraph TFLite model, run level by level (see the module docstring).

    ``run(*inputs)`` takes the model inputs in order (float32 arrays of their shapes) and returns
    the model outputs in order.
    """

    def __init__(
        self, content: bytes, custom_ops: Mapping[str, CustomOp] | None = None, threads: int = 1
    ) -> None:
        ops = custom_ops or {}
        plan = model_cache.load(content)
        if plan is None:
            plan = self._plan(content, ops)
            model_cache.store(content, plan["meta"], plan["blobs"], plan["consts"])
        meta = plan["meta"]
        self._inputs: list[int] = meta["inputs"]
        self._outputs: list[int] = meta["outputs"]
        self._consts: dict[int, np.ndarray] = plan["consts"]
        self._steps: list[tuple[str, Any]] = []
        for step in meta["steps"]:
            if step["kind"] == "custom":
                fn = ops.get(step["name"])
                if fn is None:
                    raise ValueError(f"the model needs custom operator {step['name']!r}")
                self._steps.append(("custom", (fn, step["opts"], step["inputs"], step["output"])))
            else:
                interp = _interpreter(plan["blobs"][step["blob"]], threads)
                self._steps.append(("litert", (interp, step["inputs"], step["outputs"])))

    def _plan(self, content: bytes, ops: Mapping[str, CustomOp]) -> dict[str, Any]:
        """Cut the model (see the module docstring) into plain data: step descriptions, the
        sub-models' bytes and the custom operators' constant inputs."""
        from ai_edge_litert import schema_py_generated as schema
        from flatbuffers import flexbuffers

        self._schema = schema
        model = schema.ModelT.InitFromPackedBuf(content, 0)
        if len(model.subgraphs) != 1:
            raise ValueError(f"expected one subgraph, the model has {len(model.subgraphs)}")
        sg = model.subgraphs[0]
        names = [oc.customCode.decode() if oc.customCode else None for oc in model.operatorCodes]
        self._inputs = [int(i) for i in sg.inputs]
        self._outputs = [int(i) for i in sg.outputs]
        # Operators that only read stored weights (fp16 DEQUANTIZE, DENSIFY) are copied into every
        # sub-model that uses their output: XNNPACK needs static weights, not sub-model inputs.
        self._const_src: dict[int, Any] = {}
        level: dict[int, int] = {}
        plan: list[tuple[int, bool, Any]] = []  # (level, is_custom, op)
        for op in sg.operators:
            ins = [int(i) for i in op.inputs if i >= 0]
            name = names[op.opcodeIndex]
            if name is None and ins and all(_has_data(model, sg.tensors[i]) for i in ins):
                self._const_src.update({int(o): op for o in op.outputs})
                continue
            lv = max((level.get(i, 0) for i in ins), default=0)
            if name is not None:
                if name not in ops:
                    raise ValueError(f"the model needs custom operator {name!r}")
                if any(i in self._const_src for i in ins):
                    raise ValueError(f"custom operator {name!r} reads a computed weight")
                lv += 1
            for o in op.outputs:
                level[int(o)] = lv
            plan.append((lv, name is not None, op))
        has_custom = any(is_custom for _lv, is_custom, _op in plan)
        steps: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for lv in range(max((p[0] for p in plan), default=0) + 1):
            for p_lv, is_custom, op in plan:
                if is_custom and p_lv == lv:
                    raw = op.customOptions
                    opts = flexbuffers.Loads(bytes(raw)) if raw is not None and len(raw) else {}
                    steps.append({"kind": "custom", "name": names[op.opcodeIndex], "opts": opts,
                                  "inputs": [int(i) for i in op.inputs],
                                  "output": int(op.outputs[0])})  # fmt: skip
            segment = [op for p_lv, is_custom, op in plan if p_lv == lv and not is_custom]
            if segment:
                if not has_custom:  # run the model as it is
                    seg_in, seg_out, sub = self._inputs, self._outputs, content
                else:
                    seg_in, seg_out, sub = self._cut(model, segment, plan)
                steps.append({"kind": "litert", "blob": len(blobs), "inputs": seg_in,
                              "outputs": seg_out})  # fmt: skip
                blobs.append(sub)
        consts: dict[int, np.ndarray] = {}
        for _lv, is_custom, op in plan:
            if is_custom:
                for i in op.inputs:
                    value = _const(model, sg.tensors[i]) if i >= 0 else None
                    if value is not None:
                        consts[int(i)] = value
        meta = {"inputs": self._inputs, "outputs": self._outputs, "steps": steps}
        return {"meta": meta, "blobs": blobs, "consts": consts}

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self._inputs):
            raise ValueError(f"expected {len(self._inputs)} inputs, got {len(inputs)}")
        values: dict[int, np.ndarray] = dict(self._consts)
        values.update(
            {i: np.asarray(x, np.float32) for i, x in zip(self._inputs, inputs, strict=True)}
        )
        for kind, step in self._steps:
            if kind == "custom":
                fn, opts, ins, out = step
                values[out] = fn([values[int(i)] for i in ins], opts)
                continue
            interp, seg_in, seg_out = step
            details = interp.get_input_details()
            for d, i in zip(details, seg_in, strict=True):
                interp.set_tensor(d["index"], values[i].astype(d["dtype"]).reshape(d["shape"]))
            interp.invoke()
            for d, o in zip(interp.get_output_details(), seg_out, strict=True):
                values[o] = interp.get_tensor(d["index"])
        return [values[o] for o in self._outputs]

    def _cut(
        self, model: Any, segment: Sequence[Any], plan: Sequence[tuple[int, bool, Any]]
    ) -> tuple[list[int], list[int], bytes]:
        """A sub-model of ``segment``'s operators: ``(input ids, output ids, flatbuffer)``."""
        import flatbuffers

        schema = self._schema
        sg = model.subgraphs[0]
        seg_ids = {id(op) for op in segment}
        weights: dict[int, Any] = {}
        for op in segment:
            for i in op.inputs:
                src = self._const_src.get(int(i))
                if src is not None:
                    weights[id(src)] = src
        order = {id(op): k for k, op in enumerate(sg.operators)}
        segment = sorted([*weights.values(), *segment], key=lambda op: order[id(op)])
        produced = {int(o) for op in segment for o in op.outputs}
        consumed = [int(i) for op in segment for i in op.inputs if i >= 0]
        seg_in = sorted(
            {i for i in consumed if i not in produced and not _has_data(model, sg.tensors[i])}
        )
        used_later = {int(i) for _lv, _c, op in plan if id(op) not in seg_ids for i in op.inputs}
        seg_out = sorted(
            o
            for o in produced
            if o in self._outputs or (o in used_later and o not in self._const_src)
        )
        keep = sorted(set(consumed) | produced)
        remap = {old: new for new, old in enumerate(keep)}
        buffers = [schema.BufferT()]
        tensors = []
        for old in keep:
            t = copy.copy(sg.tensors[old])
            if _has_data(model, t):
                buffers.append(model.buffers[t.buffer])
                t.buffer = len(buffers) - 1
            else:
                t.buffer = 0
            tensors.append(t)
        codes = sorted({op.opcodeIndex for op in segment})
        code_map = {old: new for new, old in enumerate(codes)}
        new_ops = []
        for op in segment:
            o = copy.copy(op)
            o.inputs = [remap[int(i)] if i >= 0 else -1 for i in op.inputs]
            o.outputs = [remap[int(i)] for i in op.outputs]
            o.opcodeIndex = code_map[op.opcodeIndex]
            new_ops.append(o)
        sub = schema.SubGraphT()
        sub.tensors, sub.operators = tensors, new_ops
        sub.inputs = [remap[i] for i in seg_in]
        sub.outputs = [remap[o] for o in seg_out]
        sub.name = b"segment"
        out = schema.ModelT()
        out.version = model.version
        out.operatorCodes = [model.operatorCodes[c] for c in codes]
        out.subgraphs, out.buffers = [sub], buffers
        out.description = model.description
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(out.Pack(builder), file_identifier=b"TFL3")
        return seg_in, seg_out, bytes(builder.Output())


def _has_data(model: Any, tensor: Any) -> bool:
    """Whether ``tensor`` is a constant stored in the model (weights), not computed."""
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _const(model: Any, tensor: Any) -> np.ndarray | None:
    """The value of a constant float32 tensor, or None when it is computed at run time."""
    if not _has_data(model, tensor) or tensor.type != 0:  # 0 = FLOAT32
        return None
    data = model.buffers[tensor.buffer].data
    return np.frombuffer(bytes(data), np.float32).reshape([int(d) for d in tensor.shape])


def _interpreter(content: bytes, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=threads)
    interp.allocate_tensors()
    return interp

"""Batching several sessions' chunks into one model call, and splitting the results back.

An *item* is one session's input to a call: a tree of tuples, lists, dicts and dataclasses whose
tensor leaves have the batch on dimension 0 (usually 1), e.g. ``(latents, timesteps,
TextContext, AudioTokens)``. Items whose trees have the same structure, the same non-tensor
leaves (frame offsets, flags) and tensors that agree in everything but the batch size (shape
after dimension 0, dtype, device) form a group; a group becomes one call with the tensors
concatenated on dimension 0, and the call's output tree is split back by each item's batch size.

Pure functions without a model, so the engine's ``generate`` only has to say what one call is::

    outputs = run_grouped(lambda batch: step(*batch), items, max_batch=4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

#: A tree's structure: a nested tuple of node kinds, keys and (for non-tensor leaves) values.
TreeSpec = Hashable


def _is_dataclass_instance(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def flatten(tree: Any) -> tuple[list[torch.Tensor], TreeSpec]:
    """Tensor leaves in a fixed order and a hashable spec of everything else.

    Non-tensor leaves must be hashable (ints, floats, strings, enums, None...): they are part of
    the spec, so items that differ in them are not batched together.
    """
    leaves: list[torch.Tensor] = []

    def walk(node: Any) -> TreeSpec:
        if isinstance(node, torch.Tensor):
            leaves.append(node)
            return ("tensor", tuple(node.shape[1:]), node.dtype, str(node.device))
        if isinstance(node, (tuple, list)):
            kind = type(node)
            return ("seq", kind, tuple(walk(x) for x in node))
        if isinstance(node, dict):
            return ("dict", tuple((k, walk(v)) for k, v in node.items()))
        if _is_dataclass_instance(node):
            names = tuple(f.name for f in dataclasses.fields(node) if f.init)
            return ("dc", type(node), tuple((n, walk(getattr(node, n))) for n in names))
        try:
            hash(node)
        except TypeError:
            raise TypeError(
                f"cannot batch a leaf of type {type(node).__name__}: use tensors or hashable values"
            ) from None
        return ("leaf", node)

    spec = walk(tree)
    return leaves, spec


def unflatten(spec: TreeSpec, leaves: Sequence[torch.Tensor]) -> Any:
    """Rebuild a tree from :func:`flatten`'s spec and (new) tensor leaves, in the same order."""
    it = iter(leaves)

    def build(node: Any) -> Any:
        tag = node[0]
        if tag == "tensor":
            return next(it)
        if tag == "seq":
            kind, children = node[1], [build(c) for c in node[2]]
            if kind in (tuple, list):
                return kind(children)
            return kind(*children)  # a named tuple
        if tag == "dict":
            return {k: build(v) for k, v in node[1]}
        if tag == "dc":
            return node[1](**{n: build(v) for n, v in node[2]})
        return node[1]

    out = build(spec)
    if next(it, None) is not None:
        raise ValueError("more leaves than the spec has tensors")
    return out


def batch_size(tree: Any) -> int:
    """Batch rows of an item: dimension 0 of its first tensor leaf (1 when it has none)."""
    leaves, _ = flatten(tree)
    return int(leaves[0].shape[0]) if leaves else 1


def group_indices(items: Sequence[Any], max_batch: int | None = None) -> list[list[int]]:
    """Indices of ``items`` that can share a call, in order of first appearance.

    A group holds items of one spec and at most ``max_batch`` batch rows (None: no limit); an
    item bigger than ``max_batch`` on its own still gets a group.
    """
    if max_batch is not None and max_batch <= 0:
        raise ValueError("max_batch must be positive")
    open_groups: dict[TreeSpec, list[int]] = {}
    rows: dict[TreeSpec, int] = {}
    groups: list[list[int]] = []
    for i, item in enumerate(items):
        _, spec = flatten(item)
        size = batch_size(item)
        group = open_groups.get(spec)
        if group is None or (max_batch is not None and rows[spec] + size > max_batch):
            group = []
            groups.append(group)
            open_groups[spec], rows[spec] = group, 0
        group.append(i)
        rows[spec] += size
    return groups


def stack(items: Sequence[Any]) -> Any:
    """One batched tree from items of one spec (tensors concatenated on dimension 0)."""
    if not items:
        raise ValueError("nothing to stack")
    flat = [flatten(item) for item in items]
    spec = flat[0][1]
    if any(s != spec for _, s in flat[1:]):
        raise ValueError("items differ in structure, non-tensor values or tensor shapes")
    if len(items) == 1:
        return items[0]
    columns = zip(*(leaves for leaves, _ in flat), strict=True)
    return unflatten(spec, [torch.cat(col, dim=0) for col in columns])


def split(tree: Any, sizes: Sequence[int]) -> list[Any]:
    """Undo :func:`stack` on an output tree: one tree per item, ``sizes`` rows each (views)."""
    leaves, spec = flatten(tree)
    total = sum(sizes)
    bad = [tuple(t.shape) for t in leaves if t.dim() == 0 or t.shape[0] != total]
    if bad:
        raise ValueError(f"outputs {bad} do not have the batch {total} on dimension 0")
    if len(sizes) == 1:
        return [tree]
    parts = [t.split(list(sizes), dim=0) for t in leaves]
    return [unflatten(spec, [p[i] for p in parts]) for i in range(len(sizes))]


def run_grouped(
    fn: Callable[[Any], Any], items: Sequence[Any], *, max_batch: int | None = None
) -> list[Any]:
    """``[fn(item) for item in items]``, but with one ``fn`` call per group of agreeing items.

    ``fn`` takes a batched tree and returns a tree whose tensors have the group's batch on
    dimension 0. Results come back in the order of ``items``.
    """
    results: list[Any] = [None] * len(items)
    for group in group_indices(items, max_batch):
        members = [items[i] for i in group]
        outputs = split(fn(stack(members)), [batch_size(m) for m in members])
        for i, out in zip(group, outputs, strict=True):
            results[i] = out
    return results

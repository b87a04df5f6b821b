"""Batching sessions' chunks: which chunks share a model call, and trees of call arguments.

* :func:`group_by` - indices of chunks with an equal key (latent length, decoder phase) that can
  share one call; the engine and the decode stage group with it.
* :func:`flatten` / :func:`unflatten` - a call's arguments (tuples, lists, dicts, dataclasses with
  tensor leaves) as a list of tensors plus a hashable structure: the compiled step keys its
  shapes by it, and the structure rebuilds the arguments around new tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
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


def group_by(keys: Sequence[Hashable], max_batch: int | None = None) -> list[list[int]]:
    """Indices of equal ``keys`` that can share one model call, in order of first appearance.

    A group holds at most ``max_batch`` indices (None: no limit).
    """
    if max_batch is not None and max_batch <= 0:
        raise ValueError("max_batch must be positive")
    open_groups: dict[Hashable, list[int]] = {}
    groups: list[list[int]] = []
    for i, key in enumerate(keys):
        group = open_groups.get(key)
        if group is None or (max_batch is not None and len(group) >= max_batch):
            group = open_groups[key] = []
            groups.append(group)
        group.append(i)
    return groups

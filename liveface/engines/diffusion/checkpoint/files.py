"""Loading weights from local paths, with errors that say what is wrong.

Supported on disk:
- one ``*.safetensors`` file;
- a directory of sharded safetensors with an index (``*.safetensors.index.json``, the Hugging Face
  layout used by the official Wan2.2 and diffusers checkpoints);
- a ``*.pth`` / ``*.pt`` / ``*.ckpt`` tensor file (the official Wan VAEs ship as ``.pth``), read
  with ``torch.load(weights_only=True)`` so that no code in the file is executed.

Nothing here downloads anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from liveface.errors import CheckpointError

SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _load_safetensors(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated: "
            "download it again"
        ) from e


def _load_torch(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(
            f"{path} is not a readable tensor file ({type(e).__name__}: {e}); it may be "
            "truncated or not a weights file"
        ) from e
    # Training checkpoints wrap the weights; accept the common wrappers.
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a flat mapping of names to tensors")
    return obj


def _index_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SAFETENSORS}.index.json"))


def load_state_dict(
    path: str | Path, *, device: str | torch.device = "cpu", prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint at a local ``path`` (file or directory).

    Args:
        path: a weights file, or a directory with one index file or exactly one weights file.
        device: where the tensors are placed.
        prefix: in a directory with several index files, pick the one whose name starts with it.

    Raises:
        CheckpointError: missing path, missing shard, unreadable or truncated file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    if p.is_file():
        if p.name.endswith(f"{SAFETENSORS}.index.json"):
            return _load_sharded(p, device)
        if p.suffix == SAFETENSORS:
            return _load_safetensors(p, device)
        if p.suffix in TORCH_SUFFIXES:
            return _load_torch(p, device)
        raise CheckpointError(f"{p}: unknown weights format (expected .safetensors or .pth)")
    indexes = _index_files(p)
    if prefix is not None:
        indexes = [i for i in indexes if i.name.startswith(prefix)]
    if len(indexes) == 1:
        return _load_sharded(indexes[0], device)
    if len(indexes) > 1:
        names = ", ".join(i.name for i in indexes)
        raise CheckpointError(f"{p} holds several index files ({names}); pass one of them")
    files = sorted(p.glob(f"*{SAFETENSORS}")) or [
        f for f in sorted(p.iterdir()) if f.suffix in TORCH_SUFFIXES
    ]
    if len(files) != 1:
        raise CheckpointError(
            f"{p} has no index file and {len(files)} weights files; expected an index "
            f"(*{SAFETENSORS}.index.json) or a single weights file"
        )
    return load_state_dict(files[0], device=device)


def _load_sharded(index_path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        index = json.loads(index_path.read_text())
        weight_map: Mapping[str, str] = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid index file ({e})") from e
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index_path.parent / s).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {index_path.parent} is missing shard(s): {', '.join(missing)}"
        )
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(_load_safetensors(index_path.parent / shard, device))
    absent = sorted(k for k in weight_map if k not in out)
    if absent:
        raise CheckpointError(
            f"index {index_path.name} lists tensors that no shard holds: {_names(absent)}"
        )
    return out


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys by name."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_names(wrong)}")
    if problems:
        raise CheckpointError(f"{what} does not match the model config; " + "; ".join(problems))


def assign_state_dict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str = "checkpoint",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Check ``state`` against ``module`` and load it (also into a module on the meta device).

    Args:
        dtype: cast floating-point tensors to this dtype while loading (None keeps them).
    """
    check_state_dict(module, state, what)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module

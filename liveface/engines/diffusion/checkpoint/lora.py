"""PEFT LoRA files (LiveAvatar's ``liveavatar.safetensors``) merged into a model at load time.

LiveAvatar wraps the S2V DiT with PEFT (``LoraConfig(r=128, lora_alpha=64, target_modules=[q, k,
v, o, ffn.0, ffn.2])``), loads the file into it and calls ``merge_and_unload``. This module does the
same arithmetic without PEFT:

- keys look like ``[base_model.model.]<module>.lora_A[.<adapter>].weight`` (``(rank, in)``) and
  ``...lora_B...`` (``(out, rank)``); PEFT's own layout may also carry full tensors
  (``<module>.base_layer.weight`` or plain parameter names), which replace the base's as their
  loader does;
- a target module is a ``nn.Linear`` whose name is, or ends with ``.``, one of ``targets``
  (PEFT's rule); in Wan-S2V that matches every block's self- and cross-attention ``q, k, v, o``,
  ``ffn.0``, ``ffn.2`` and the audio injector's attention;
- the merge is ``W += (B @ A) * alpha / rank``, the product in float32 and the sum rounded once to
  ``W``'s dtype, as PEFT does with its (float32) adapter weights;
- the rank comes from the tensors; alpha from the file when it says (safetensors metadata
  ``lora_alpha``/``alpha``, or an ``adapter_config.json`` beside it), else from the settings.

A file that does not fit the model (a module it lacks, a shape that differs, half of a pair, a
module outside the targets) is refused with the keys named, before any weight is changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from liveface.engines.diffusion.checkpoint.files import load_state_dict
from liveface.errors import CheckpointError

#: Prefix PEFT's ``get_peft_model`` puts before every key.
PEFT_PREFIX = "base_model.model."
_PAIR = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])(?:\.[^.]+)?\.weight$")
_LIMIT = 8


@dataclass(frozen=True)
class LoraSettings:
    """How the LoRA was trained (used where the file does not say).

    Attributes:
        alpha: PEFT ``lora_alpha``.
        rank: PEFT ``r``; None takes it from the tensors (a file whose tensors disagree with a
            given rank is refused).
        targets: PEFT ``target_modules``.
    """

    alpha: float
    rank: int | None = None
    targets: tuple[str, ...] = ("q", "k", "v", "o", "ffn.0", "ffn.2")


#: ``liveavatar/configs/s2v_causal_sft.yaml``.
LIVEAVATAR_LORA = LoraSettings(alpha=64.0, rank=128)


@dataclass
class LoraFile:
    """A LoRA as read from disk.

    Attributes:
        pairs: module name -> ``(A (rank, in), B (out, rank))``.
        full: parameter name -> tensor, for full tensors the file carries.
        alpha: the alpha the file states, or None.
        path: where it came from (for messages).
    """

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    full: dict[str, torch.Tensor] = field(default_factory=dict)
    alpha: float | None = None
    path: str = "LoRA"


def _names(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIMIT])
    return shown + (f" ... ({len(keys) - _LIMIT} more)" if len(keys) > _LIMIT else "")


def _file_alpha(path: Path) -> float | None:
    """The alpha a file states: safetensors metadata, or PEFT's ``adapter_config.json``."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        for key in ("lora_alpha", "alpha"):
            if key in meta:
                try:
                    return float(meta[key])
                except ValueError as e:
                    raise CheckpointError(
                        f"{path}: metadata {key}={meta[key]!r} is no number"
                    ) from e
    config = path.parent / "adapter_config.json"
    if config.is_file():
        try:
            return float(json.loads(config.read_text())["lora_alpha"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{config} has no numeric lora_alpha") from e
    return None


def split_lora(state: dict[str, torch.Tensor], what: str = "LoRA") -> LoraFile:
    """Sort a state dict into LoRA pairs and full tensors (see the module docstring)."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    full: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        name = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        m = _PAIR.match(name)
        if m is None:
            full[name.replace(".base_layer.", ".")] = t
        else:
            halves.setdefault(m["module"], {})[m["kind"]] = t
    lonely = [f"{m}.lora_{'B' if 'A' in h else 'A'}" for m, h in halves.items() if len(h) != 2]
    if lonely:
        raise CheckpointError(f"{what} lacks half of a LoRA pair: {_names(lonely)}")
    pairs = {m: (h["A"], h["B"]) for m, h in halves.items()}
    return LoraFile(pairs=pairs, full=full, path=what)


def read_lora(path: str | Path) -> LoraFile:
    """Read a LoRA file (``.safetensors`` or a torch tensor file).

    Raises:
        CheckpointError: unreadable, or half of a pair missing (named).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"LoRA file {p} does not exist (LiveAvatar's is liveavatar.safetensors)"
        )
    lora = split_lora(load_state_dict(p), str(p))
    lora.alpha = _file_alpha(p)
    if not lora.pairs and not lora.full:
        raise CheckpointError(f"{p} holds no tensors")
    return lora


def is_target(name: str, targets: tuple[str, ...]) -> bool:
    """PEFT's match of a module name against ``target_modules`` entries."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _check(model: nn.Module, lora: LoraFile, settings: LoraSettings) -> None:
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    unknown: list[str] = []
    outside: list[str] = []
    wrong: list[str] = []
    ranks: set[int] = set()
    for name, (a, b) in lora.pairs.items():
        layer = modules.get(name)
        if not isinstance(layer, nn.Linear):
            (unknown if layer is None else outside).append(f"{name}.lora_A")
            continue
        if not is_target(name, settings.targets):
            outside.append(f"{name}.lora_A")
            continue
        out_f, in_f = layer.out_features, layer.in_features
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != in_f or b.shape[0] != out_f:
            wrong.append(
                f"{name} (A {tuple(a.shape)}, B {tuple(b.shape)}; the layer is {in_f} -> {out_f})"
            )
        elif a.shape[0] != b.shape[1]:
            wrong.append(f"{name} (A has rank {a.shape[0]}, B rank {b.shape[1]})")
        else:
            ranks.add(a.shape[0])
    for name, t in lora.full.items():
        p = params.get(name)
        if p is None:
            unknown.append(name)
        elif tuple(p.shape) != tuple(t.shape):
            wrong.append(f"{name} (file {tuple(t.shape)}, model {tuple(p.shape)})")
    if settings.rank is not None and ranks - {settings.rank}:
        wrong.append(f"ranks {sorted(ranks)} (the settings say {settings.rank})")
    problems = []
    if unknown:
        problems.append(f"keys the model does not have: {_names(unknown)}")
    if outside:
        problems.append(
            f"modules outside the LoRA targets {', '.join(settings.targets)}: {_names(outside)}"
        )
    if wrong:
        problems.append(f"shapes that do not fit: {_names(wrong)}")
    if problems:
        raise CheckpointError(f"{lora.path} does not fit this model; " + "; ".join(problems))


@torch.no_grad()
def merge_lora(model: nn.Module, lora: LoraFile, settings: LoraSettings) -> int:
    """Merge ``lora`` into ``model``'s weights in place (see the module docstring); returns the
    number of layers changed.

    Raises:
        CheckpointError: the LoRA does not fit (nothing is changed then).
    """
    _check(model, lora, settings)
    alpha = lora.alpha if lora.alpha is not None else settings.alpha
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for name, t in lora.full.items():
        params[name].copy_(t.to(params[name].dtype))
    for name, (a, b) in lora.pairs.items():
        weight = modules[name].weight
        delta = (b.to(weight.device).float() @ a.to(weight.device).float()) * (alpha / a.shape[0])
        weight.copy_((weight.float() + delta).to(weight.dtype))
    return len(lora.pairs)


def load_and_merge(model: nn.Module, path: str | Path, settings: LoraSettings) -> int:
    """:func:`read_lora` then :func:`merge_lora`."""
    return merge_lora(model, read_lora(path), settings)

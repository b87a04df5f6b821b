"""LoRA on the DiT's linear layers, as forward hooks: the DiT's own weights and keys stay as they
are (so the base still loads with strict key checks), and :func:`merge_lora` folds the low-rank
updates into the weights for export.

A layer ``W`` (``out x in``) gets ``W + (alpha / rank) * B @ A`` with ``A`` ``(rank, in)``
(Kaiming-uniform) and ``B`` ``(out, rank)`` (zeros), so a fresh LoRA changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from liveface.engines.diffusion.dit.model import WanDiT

#: Linear layers of a block per target group.
TARGET_LAYERS = {
    "self_attn": ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    "cross_attn": ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"),
    "ffn": ("ffn.0", "ffn.2"),
}


class LoRALinear(nn.Module):
    """The low-rank update of one linear layer ``(batch, ..., in) -> (batch, ..., out)``."""

    def __init__(
        self, layer: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.scale = alpha / rank
        self.down = nn.Parameter(torch.empty(rank, layer.in_features))
        self.up = nn.Parameter(torch.zeros(layer.out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=generator)
        #: False leaves the layer as it is (a teacher sharing the base with a student).
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.linear(x.to(self.down.dtype), self.down)
        return nn.functional.linear(h, self.up) * self.scale

    def delta(self) -> torch.Tensor:
        """The weight update ``(out, in)``."""
        return (self.up @ self.down) * self.scale


class LoRA(nn.Module):
    """LoRA modules for the chosen layers of every DiT block, hooked into ``dit``.

    Keys are ``blocks.{i}.{layer}`` with dots as ``__`` (module names cannot hold dots), e.g.
    ``blocks__3__self_attn__q.down``. The initial ``A`` matrices come from ``seed``.
    """

    def __init__(
        self, dit: WanDiT, *, rank: int, alpha: float, targets: Iterable[str], seed: int = 0
    ) -> None:
        super().__init__()
        targets = tuple(targets)
        #: rank, alpha and targets (what rebuilding it needs).
        self.spec = {"rank": rank, "alpha": alpha, "targets": list(targets)}
        self.layers = nn.ModuleDict()
        self._handles = []
        weight = dit.patch_embedding.weight
        g = torch.Generator().manual_seed(seed)  # the same initial LoRA in every process
        for i, block in enumerate(dit.blocks):
            for group in targets:
                for name in TARGET_LAYERS[group]:
                    layer = block.get_submodule(name)
                    if not isinstance(layer, nn.Linear):
                        raise TypeError(f"blocks.{i}.{name} is not a linear layer")
                    lora = LoRALinear(layer, rank, alpha, g).to(weight.device)
                    key = f"blocks.{i}.{name}".replace(".", "__")
                    self.layers[key] = lora
                    self._handles.append(layer.register_forward_hook(_hook(lora)))

    @property
    def enabled(self) -> bool:
        return all(m.enabled for m in self._loras())

    @enabled.setter
    def enabled(self, on: bool) -> None:
        for m in self._loras():
            m.enabled = on

    def _loras(self) -> list[LoRALinear]:
        return [m for m in self.layers.values() if isinstance(m, LoRALinear)]

    def remove(self) -> None:
        """Unhook from the DiT (the DiT is as before)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _hook(lora: LoRALinear):
    def hook(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        if not lora.enabled:
            return output
        return output + lora(inputs[0]).to(output.dtype)

    return hook


@torch.no_grad()
def merge_lora(dit: WanDiT, lora: LoRA) -> None:
    """Add every update into the DiT's weights (in place) and unhook the LoRA."""
    for key, module in lora.layers.items():
        assert isinstance(module, LoRALinear)
        layer = dit.get_submodule(key.replace("__", "."))
        assert isinstance(layer, nn.Linear)
        layer.weight += module.delta().to(layer.weight.dtype)
    lora.remove()

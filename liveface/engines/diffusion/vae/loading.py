"""Building the VAEs from configs, and loading / saving their weights from local paths only.

The official files load unchanged: ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth`` (plain state dicts) with
the ``wan2.1`` / ``wan2.2`` presets, ``taew2_1.pth`` / ``taew2_2.pth`` (or their ``.safetensors``
conversions) with ``taew2_1`` / ``taew2_2``. Files written by :func:`save_vae` carry their config in
the safetensors metadata, so they load without naming one.

Every problem (missing or truncated file, missing / unexpected keys, wrong shapes) is a
:class:`~liveface.errors.CheckpointError` that names the file and the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from liveface.engines.diffusion.checkpoint.files import assign_state_dict, load_state_dict
from liveface.errors import CheckpointError

from .config import VAEConfig, WanVAEConfig, config_from_json, preset
from .taehv import TAEHV, TGrow
from .wan import WanVAE

VAE = WanVAE | TAEHV
CONFIG_METADATA_KEY = "liveface_vae_config"


def resolve_config(config: VAEConfig | str) -> VAEConfig:
    return preset(config) if isinstance(config, str) else config


def build_vae(
    config: VAEConfig | str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> VAE:
    """A model with freshly initialised (random) weights, in eval mode without gradients.

    ``device="meta"`` builds it without allocating weights (to check or assign a state dict).
    """
    cfg = resolve_config(config)
    with torch.device(device or "cpu"):
        model: VAE = WanVAE(cfg) if isinstance(cfg, WanVAEConfig) else TAEHV(cfg)
    if dtype is not None:
        model.to(dtype)
    return model.eval().requires_grad_(False)


def adapt_state_dict(model: VAE, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fit a checkpoint to a config that switches TAEHV decoder time upsampling off.

    A TGrow whose stage is off keeps only the output channels of the last of the frames it was
    trained to emit (the original's behaviour); everything else passes through unchanged.
    """
    if not isinstance(model, TAEHV):
        return state
    state = dict(state)
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if isinstance(layer, TGrow) and key in state:
            rows = layer.conv.weight.shape[0]
            have = state[key].shape[0]
            if have > rows and have % rows == 0:
                state[key] = state[key][-rows:]
    return state


def _config_from_file(path: Path) -> VAEConfig:
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} does not carry a VAE config: pass a preset name or config")
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from e
    if CONFIG_METADATA_KEY not in meta:
        raise CheckpointError(f"{path} does not carry a VAE config: pass a preset name or config")
    return config_from_json(meta[CONFIG_METADATA_KEY])


def load_vae(
    path: str | Path,
    config: VAEConfig | str | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> VAE:
    """Load a VAE from a local weights file (or directory, see ``checkpoint.load_state_dict``).

    Args:
        path: ``.pth`` / ``.safetensors`` file, or a directory with one of them or an index.
        config: a config or preset name; None reads the config that :func:`save_vae` stored.
        device: where the weights go.
        dtype: cast floating-point weights to it (None keeps the file's).

    Raises:
        CheckpointError: the file is missing, unreadable or truncated, or its keys / shapes do not
            match the config (listed by name).
    """
    p = Path(path).expanduser()
    cfg = _config_from_file(p) if config is None else resolve_config(config)
    state = load_state_dict(p, device=device)
    model = build_vae(cfg, device="meta")
    state = adapt_state_dict(model, state)
    assign_state_dict(model, state, what=f"{p} (as {cfg.name})", dtype=dtype)
    return model.eval().requires_grad_(False)


def save_vae(model: VAE, path: str | Path) -> Path:
    """Write the weights as safetensors with the config in the metadata; returns the path."""
    from safetensors.torch import save_file

    p = Path(path).expanduser()
    if p.suffix != ".safetensors":
        raise ValueError(f"save_vae writes .safetensors files, not {p.name}")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(p), metadata={CONFIG_METADATA_KEY: model.config.to_json()})
    return p

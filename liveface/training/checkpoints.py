"""A run directory: its config, resumable checkpoints, logs and sample videos.

Layout::

    RUN/
      run.json                      the run's config, base and data (written at the start)
      checkpoints/step-00001000/    trained.safetensors   trainable weights (adapter.*, lora.*,
                                                          dit.* for full fine-tuning)
                                    extra.safetensors     e.g. the distillation's EMA weights
                                    optimizer.pt          AdamW state
                                    state.json            step, samples seen
                                    rng-rank{r}.pt        every process's RNG states
      latest                        name of the newest complete checkpoint
      metrics.jsonl, tb/            logs (JSON lines; TensorBoard when installed)
      samples/step-00001000.mp4     preview videos

A checkpoint becomes ``latest`` only after every process has written its part, so a crash while
saving leaves the previous one in place. Resuming restores weights, optimizer, step (the data
position follows from it) and RNG states.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveface.errors import ConfigError

TRAINED = "trained.safetensors"
EXTRA = "extra.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
LATEST = "latest"
RUN_CONFIG = "run.json"


@dataclass
class Resumed:
    """What :func:`load_checkpoint` returns."""

    step: int
    trained: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    p = Path(run).expanduser()
    marker = p / LATEST
    if not marker.is_file():
        return None
    ckpt = p / "checkpoints" / marker.read_text().strip()
    return ckpt if (ckpt / STATE).is_file() else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_part(
    run: Path,
    step: int,
    *,
    rank: int,
    trained: dict[str, torch.Tensor] | None,
    metadata: dict[str, str] | None = None,
    extra: dict[str, torch.Tensor] | None,
    optimizer: dict[str, Any] | None,
    state: dict[str, Any] | None,
) -> Path:
    """Write this process's part of checkpoint ``step`` (weights and optimizer on rank 0)."""
    from safetensors.torch import save_file

    d = checkpoint_dir(run, step)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), d / f"rng-rank{rank}.pt")
    if trained is not None:
        save_file(trained, str(d / TRAINED), metadata=metadata)
    if extra:
        save_file(extra, str(d / EXTRA))
    if optimizer is not None:
        torch.save(optimizer, d / OPTIMIZER)
    if state is not None:  # written last: its presence marks the checkpoint complete
        (d / STATE).write_text(json.dumps(state))
    return d


def publish(run: Path, step: int, keep: int) -> None:
    """Make checkpoint ``step`` the latest and delete all but the newest ``keep``."""
    d = checkpoint_dir(run, step)
    tmp = run / (LATEST + ".tmp")
    tmp.write_text(d.name)
    os.replace(tmp, run / LATEST)
    all_ckpts = sorted((run / "checkpoints").glob("step-*"))
    for old in all_ckpts[:-keep]:
        if old != d:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt: Path, *, rank: int, map_location: str | torch.device = "cpu") -> Resumed:
    """Read a checkpoint (and restore this process's RNG states).

    Raises:
        ConfigError: incomplete or unreadable.
    """
    from safetensors.torch import load_file

    try:
        state = json.loads((ckpt / STATE).read_text())
        trained = load_file(str(ckpt / TRAINED))
        extra = load_file(str(ckpt / EXTRA)) if (ckpt / EXTRA).is_file() else {}
        optimizer = torch.load(ckpt / OPTIMIZER, map_location=map_location, weights_only=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(f"checkpoint {ckpt} cannot be read ({e})") from e
    rng = ckpt / f"rng-rank{rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=False))
    return Resumed(int(state["step"]), trained, extra, optimizer)


def trained_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The trained weights and their metadata (the adapter's config, the LoRA's shape) of a run
    directory (its latest checkpoint), a checkpoint directory, or a ``trained.safetensors``.

    Raises:
        ConfigError: nothing trained there.
    """
    from safetensors.torch import load_file

    p = Path(source).expanduser()
    if p.is_dir() and (p / LATEST).is_file():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise ConfigError(f"{p} has no complete checkpoint")
        p = ckpt
    if p.is_dir():
        p = p / TRAINED
    if not p.is_file():
        raise ConfigError(f"no trained weights at {source} (give a run or checkpoint directory)")
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(p)), meta


def run_config(run: str | Path) -> dict[str, Any]:
    p = Path(run).expanduser() / RUN_CONFIG
    if not p.is_file():
        raise ConfigError(f"{p.parent} is not a run directory (no {RUN_CONFIG})")
    data: dict[str, Any] = json.loads(p.read_text())
    return data

"""Shared by the LiveAvatar engine and pipeline tests: a tiny S2V folder with a LoRA file, and
chunks cut as the session pipeline cuts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from s2v_checkpoint import write_s2v_checkpoint

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.diffusion.checkpoint.lora import LIVEAVATAR_LORA, is_target
from liveface.engines.diffusion.checkpoint.s2v import load_s2v_dit

SIZE = 64
RANK = 128  # LiveAvatar's; the tiny model's layers are narrower, which LoRA does not mind


def write_liveavatar_folder(root: Path) -> Path:
    """The tiny S2V folder plus ``liveavatar.safetensors`` (seeded random A/B on every target)."""
    from safetensors.torch import save_file

    write_s2v_checkpoint(root)
    dit = load_s2v_dit(root)
    g = torch.Generator().manual_seed(3)
    state = {}
    for name, m in dit.named_modules():
        if isinstance(m, torch.nn.Linear) and is_target(name, LIVEAVATAR_LORA.targets):
            a = torch.randn(RANK, m.in_features, generator=g) * 0.01
            b = torch.randn(m.out_features, RANK, generator=g) * 0.01
            state[f"base_model.model.{name}.lora_A.default.weight"] = a
            state[f"base_model.model.{name}.lora_B.default.weight"] = b
    save_file(state, str(root / "liveavatar.safetensors"))
    return root


def speech(seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t + phase) * np.sin(2 * np.pi * 3 * t)).astype(
        np.float32
    )


def chunks(spec: EngineSpec, audio: np.ndarray, count: int) -> list[AudioChunk]:
    """The first ``count`` chunks of a session over ``audio`` (zeros outside it), as the
    chunker cuts them: frames ``first_chunk_frames`` then ``chunk_frames``."""
    out, first = [], 0
    for i in range(count):
        n = spec.chunk_frames_at(i)
        start, end = spec.frame_start(first), spec.frame_start(first + n)
        lo, hi = start - spec.left_context, end + spec.lookahead
        window = np.zeros(hi - lo, np.float32)
        a, b = max(lo, 0), min(hi, audio.shape[0])
        if b > a:
            window[a - lo : b - lo] = audio[a:b]
        out.append(AudioChunk(i, first, n, start, end, window, spec.left_context, True))
        first += n
    return out

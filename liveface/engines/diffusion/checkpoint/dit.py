"""Loading and saving DiT weights from local paths (official Wan2.2 and diffusers layouts).

Official Wan2.2 layout (e.g. the Wan2.2-TI2V-5B repository root)::

    config.json                                       dim, ffn_dim, num_heads, ... model_type
    diffusion_pytorch_model.safetensors.index.json    weight_map: key -> shard
    diffusion_pytorch_model-00001-of-00003.safetensors ...

diffusers layout (``transformer/`` of a Wan pipeline): the same files with
``WanTransformer3DModel`` names (``condition_embedder.time_embedder.linear_1``,
``blocks.{i}.attn1.to_q``, ``ffn.net.0.proj``, ``scale_shift_table``, ``proj_out``, ...), which
:func:`diffusers_to_wan_key` maps onto the official names. Note the norm swap: the official
``norm3`` (the affine cross-attention norm) is diffusers' ``norm2``.

The model is built on the meta device, checked key by key against the checkpoint
(:class:`~liveface.errors.CheckpointError` lists missing, unexpected and mis-shaped keys), and
the checkpoint's tensors are assigned directly, so no random initialisation is ever computed.
The audio adapter is saved and loaded separately, in one safetensors file with its config in the
file's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from liveface.engines.diffusion.checkpoint.files import (
    assign_state_dict,
    check_state_dict,
    load_state_dict,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import AUDIO_PREFIX, WanDiT
from liveface.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_STEM = "diffusion_pytorch_model"
INDEX_NAME = f"{WEIGHTS_STEM}.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
AUDIO_FORMAT = "liveface-audio-adapter"

#: Kept in float32 when a lower dtype is requested: small tensors whose precision matters (the
#: timestep path and the modulation tables), as diffusers' ``_keep_in_fp32_modules`` does.
FP32_KEY_PARTS = ("time_embedding.", "time_projection.", "modulation")

# diffusers name -> official name; block-level names are relative to ``blocks.{i}.``.
_DIFFUSERS_TOP = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "scale_shift_table": "head.modulation",
    "proj_out": "head.head",
    "patch_embedding": "patch_embedding",
}
_DIFFUSERS_BLOCK = {
    "scale_shift_table": "modulation",
    "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    **{
        f"attn{n}.{d}": f"{o}.{w}"
        for n, o in ((1, "self_attn"), (2, "cross_attn"))
        for d, w in (
            ("to_q", "q"),
            ("to_k", "k"),
            ("to_v", "v"),
            ("to_out.0", "o"),
            ("norm_q", "norm_q"),
            ("norm_k", "norm_k"),
        )
    },
}
_WAN_TOP = {v: k for k, v in _DIFFUSERS_TOP.items()}
_WAN_BLOCK = {v: k for k, v in _DIFFUSERS_BLOCK.items()}


def _rename(key: str, top: Mapping[str, str], block: Mapping[str, str]) -> str:
    table, head, rest = top, "", key
    parts = key.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        table, head, rest = block, f"blocks.{parts[1]}.", parts[2]
    # Longest match first, on whole dotted components.
    for src in sorted(table, key=len, reverse=True):
        if rest == src or rest.startswith(src + "."):
            return head + table[src] + rest[len(src) :]
    return key


def diffusers_to_wan_key(key: str) -> str:
    """Official Wan name of a diffusers ``WanTransformer3DModel`` key (unknown keys unchanged)."""
    return _rename(key, _DIFFUSERS_TOP, _DIFFUSERS_BLOCK)


def wan_to_diffusers_key(key: str) -> str:
    """diffusers name of an official Wan key (unknown keys unchanged)."""
    return _rename(key, _WAN_TOP, _WAN_BLOCK)


def is_diffusers_layout(keys: Iterable[str]) -> bool:
    """Whether checkpoint keys use diffusers names."""
    return any(
        k.startswith("condition_embedder.") or ".attn1." in k or k == "proj_out.weight"
        for k in keys
    )


def config_from_dict(data: Mapping[str, Any]) -> DiTConfig:
    """A :class:`DiTConfig` from any of the three config dialects."""
    if data.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in data:
        return DiTConfig.from_diffusers_dict(data)
    if data.get("_class_name") == "WanModel" or "_diffusers_version" in data:
        return DiTConfig.from_wan_dict(data)
    return DiTConfig.from_dict(data)


def _resolve_dir(path: Path) -> Path:
    """Accept a diffusers pipeline root by descending into its ``transformer/`` folder."""
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and (path / "transformer").is_dir():
        return path / "transformer"
    return path


def read_dit_config(path: str | Path) -> DiTConfig:
    """Read ``config.json`` of a checkpoint directory (official, diffusers or our JSON)."""
    p = _resolve_dir(Path(path).expanduser())
    cfg_file = p / CONFIG_NAME if p.is_dir() else p.parent / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} next to the DiT weights at {p}; pass a config")
    try:
        data = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({e})") from e
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{cfg_file}: {e}") from e


def build_dit(config: DiTConfig, *, device: str | torch.device = "meta") -> WanDiT:
    """Build a DiT; on the meta device (the default) nothing is allocated or initialised."""
    with torch.device(device):
        return WanDiT(config)


def dit_key_shapes(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint key of a DiT of ``config`` with its shape (computed on meta)."""
    return {k: tuple(v.shape) for k, v in build_dit(config).base_state_dict().items()}


def count_parameters(config: DiTConfig) -> int:
    """Parameters of the DiT of ``config`` (computed on meta)."""
    return sum(p.numel() for p in build_dit(config).parameters())


def _cast(
    key: str, t: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str
) -> torch.Tensor:
    if dtype is not None and t.is_floating_point():
        keep = any(part in key for part in FP32_KEY_PARTS)
        t = t.to(torch.float32 if keep else dtype)
    return t.to(device)


@torch.no_grad()
def cast_dit(model: WanDiT, dtype: torch.dtype) -> WanDiT:
    """Cast the base DiT's weights to ``dtype`` in place, keeping :data:`FP32_KEY_PARTS` in
    float32 (the same rule as loading with a ``dtype``)."""
    for name, param in model.named_parameters():
        if not name.startswith(AUDIO_PREFIX) and param.is_floating_point():
            keep = any(part in name for part in FP32_KEY_PARTS)
            param.data = param.data.to(torch.float32 if keep else dtype)
    return model


def assign_dit_weights(
    model: WanDiT,
    state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    what: str = "DiT checkpoint",
) -> WanDiT:
    """Check ``state`` (official or diffusers names) against the base DiT and assign it.

    An attached audio module is left alone: only the official keys are checked and loaded.
    ``state`` is consumed (its tensors are moved one by one to bound peak memory).
    """
    if is_diffusers_layout(state):
        state = {diffusers_to_wan_key(k): v for k, v in state.items()}
    audio, model.audio = model.audio, None
    try:
        check_state_dict(model, state, what)
        ready = {}
        for key in list(state):
            ready[key] = _cast(key, state.pop(key), dtype, device)
        assign_state_dict(model, ready, what=what)
    finally:
        model.audio = audio
    return model


def load_dit(
    path: str | Path,
    *,
    config: DiTConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> WanDiT:
    """Load a DiT from a local checkpoint (file, sharded directory, or diffusers pipeline root).

    Args:
        config: the model config; None reads ``config.json`` next to the weights.
        dtype: cast floating-point weights (e.g. ``torch.bfloat16``); the timestep path and
            modulation tables stay float32. None keeps the checkpoint's dtypes.
        device: where the weights go (they are read on the CPU first, then moved one by one).

    Raises:
        CheckpointError: missing path or shard, bad config, missing / unexpected / mis-shaped keys.
    """
    p = _resolve_dir(Path(path).expanduser())
    if not p.exists():
        raise CheckpointError(f"DiT checkpoint path {p} does not exist")
    cfg = config if config is not None else read_dit_config(p)
    state = load_state_dict(p, prefix=WEIGHTS_STEM if p.is_dir() else None)
    model = build_dit(cfg)
    assign_dit_weights(model, state, dtype=dtype, device=device, what=f"DiT checkpoint {p}")
    return model.eval()


def save_dit(
    model: WanDiT,
    directory: str | Path,
    *,
    layout: str = "wan",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write the base DiT (no audio) as ``config.json`` + sharded safetensors + index.

    Args:
        layout: ``wan`` (official names and config) or ``diffusers``.
        max_shard_bytes: shard size limit; one tensor never spans two shards.

    Returns:
        the index file.
    """
    from safetensors.torch import save_file

    if layout not in ("wan", "diffusers"):
        raise ValueError("layout must be 'wan' or 'diffusers'")
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rename = wan_to_diffusers_key if layout == "diffusers" else (lambda k: k)
    state = {rename(k): v.detach().contiguous().cpu() for k, v in model.base_state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"{WEIGHTS_STEM}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = out / INDEX_NAME
    index.write_text(
        json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True
        )
    )
    cfg = model.config.to_wan_dict() if layout == "wan" else model.config.to_diffusers_dict()
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return index


def save_audio_adapter(adapter: AudioAdapter, path: str | Path) -> None:
    """Write the adapter's weights and config to one safetensors file."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    meta = {"format": AUDIO_FORMAT, "config": adapter.config.to_json()}
    save_file(state, str(Path(path).expanduser()), metadata=meta)


def load_audio_adapter(
    path: str | Path,
    *,
    dit: WanDiT | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> AudioAdapter:
    """Load an adapter written by :func:`save_audio_adapter` (strict key check).

    With ``dit`` the adapter is checked to fit it, placed on its device and attached to it.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"audio adapter file {p} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{p} is not a readable safetensors file ({e})") from e
    if meta.get("format") != AUDIO_FORMAT or "config" not in meta:
        raise CheckpointError(f"{p} is not an audio adapter file (no {AUDIO_FORMAT} metadata)")
    try:
        config = AudioConfig.from_json(meta["config"])
        if dit is not None:
            config.check_fits(dit.config)
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from e
    if dit is not None:
        device = dit.patch_embedding.weight.device
    state = load_state_dict(p)
    with torch.device("meta"):
        adapter = AudioAdapter(config)
    check_state_dict(adapter, state, f"audio adapter {p}")
    ready = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).to(device)
        for k, v in state.items()
    }
    assign_state_dict(adapter, ready, what=f"audio adapter {p}")
    if dit is not None:
        dit.attach_audio(adapter)
    return adapter.eval()

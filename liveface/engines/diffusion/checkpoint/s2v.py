"""The official Wan2.2-S2V-14B download as a checkpoint directory, loaded as it is.

Layout (``--checkpoint DIR``, the files of Wan-AI/Wan2.2-S2V-14B)::

    DIR/
      config.json                                   WanModel_S2V config (model kind detected here)
      diffusion_pytorch_model-0000N-of-00004.safetensors   the DiT's 4 shards
      diffusion_pytorch_model.safetensors.index.json    and their index
      Wan2.1_VAE.pth                                the Wan2.1 VAE (16 latent channels)
      models_t5_umt5-xxl-enc-bf16.pth               umT5-XXL encoder in Wan's layout
      google/umt5-xxl/                              its tokenizer
      wav2vec2-large-xlsr-53-english/               the speech encoder (transformers files)

:func:`detect_kind` reads ``config.json`` (``s2v``, or ``ti2v`` etc. for the other Wan DiTs) so
that a 5B DiT offered as S2V, or S2V offered to the 5B engine, is refused by name before any
weights are read. Missing parts are a :class:`~liveface.errors.ConfigError` naming each file and
where it comes from; damaged ones a :class:`~liveface.errors.CheckpointError` naming the file or
key. Nothing is downloaded or initialised at random.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from liveface.engines.diffusion.checkpoint.bundle import resolve_device
from liveface.engines.diffusion.checkpoint.dit import FP32_KEY_PARTS, INDEX_NAME, WEIGHTS_STEM
from liveface.engines.diffusion.checkpoint.files import check_state_dict, load_state_dict
from liveface.engines.diffusion.dit.s2v.config import S2V_CLASS, S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

CONFIG = "config.json"
VAE_FILE = "Wan2.1_VAE.pth"
#: The same VAE written by ``vae.save_vae`` (its config inside), used instead when present.
VAE_SAFETENSORS = "Wan2.1_VAE.safetensors"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
WAV2VEC2_DIR = "wav2vec2-large-xlsr-53-english"
SOURCE = "https://huggingface.co/Wan-AI/Wan2.2-S2V-14B"
#: Model names accepted by ``--model``.
MODEL_NAMES = {"s2v-14b": "s2v"}
#: Human names of the Wan DiT kinds, for errors.
KIND_NAMES = {
    "s2v": "Wan2.2-S2V-14B (speech-to-video)",
    "ti2v": "Wan2.2-TI2V-5B (text/image-to-video)",
    "t2v": "a Wan text-to-video DiT",
    "i2v": "a Wan image-to-video DiT",
}


def read_config(root: Path) -> dict[str, Any]:
    """``root/config.json`` as a dict (ConfigError when absent, CheckpointError when broken)."""
    path = root / CONFIG
    if not path.is_file():
        raise ConfigError(f"{root} has no {CONFIG}; download the model folder from {SOURCE}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download it again") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def kind_of(data: dict[str, Any]) -> str:
    """The Wan DiT kind a ``config.json`` describes (``s2v``, ``ti2v``, ...)."""
    if data.get("_class_name") == S2V_CLASS or "audio_inject_layers" in data:
        return "s2v"
    return str(data.get("model_type", "ti2v"))


def detect_kind(root: str | Path) -> str | None:
    """The kind of the DiT whose ``config.json`` sits in ``root`` (None: no such file)."""
    path = Path(root).expanduser() / CONFIG
    if not path.is_file():
        return None
    return kind_of(read_config(path.parent))


def require_kind(root: Path, want: str) -> dict[str, Any]:
    """The config of ``root``, refusing a DiT of another kind by name."""
    data = read_config(root)
    got = kind_of(data)
    if got != want:
        shape = f"dim {data.get('dim')}, {data.get('num_layers')} layers"
        raise ConfigError(
            f"{root} holds {KIND_NAMES.get(got, got)} ({shape}), not "
            f"{KIND_NAMES.get(want, want)}; point --checkpoint at the right folder"
        )
    return data


def select_model(checkpoint: str | Path | None, model: str | None) -> str:
    """``s2v`` or ``liveface``: which engine a checkpoint directory is for.

    ``model`` (``--model``) wins: ``s2v-14b`` or ``liveface``; None detects: a ``config.json``
    of an S2V DiT at the top means the official S2V folder.

    Raises:
        ConfigError: an unknown model name, or a folder holding another model than named.
    """
    if model is not None and model not in (*MODEL_NAMES, "liveface"):
        raise ConfigError(f"unknown model {model!r}; choose s2v-14b or liveface")
    if model in MODEL_NAMES:
        if checkpoint is not None and Path(checkpoint).expanduser().is_dir():
            require_kind(Path(checkpoint).expanduser(), MODEL_NAMES[model])
        return "s2v"
    if checkpoint is None:
        return "liveface"
    root = Path(checkpoint).expanduser()
    kind = detect_kind(root)
    if kind == "s2v" and model is None:
        return "s2v"
    if kind == "s2v" or detect_kind(root / "dit") == "s2v":
        raise ConfigError(
            f"{root} holds {KIND_NAMES['s2v']}, which the liveface bundle engine does not run; "
            "pass the official S2V folder itself with --model s2v-14b"
        )
    return "liveface"


@dataclass(frozen=True)
class S2VFiles:
    """Paths of an S2V checkpoint directory's parts (all checked to exist)."""

    root: Path
    config: S2VConfig
    vae: Path
    t5: Path
    tokenizer: Path
    wav2vec2: Path


def locate(path: str | Path | None) -> S2VFiles:
    """Check an S2V directory without reading weights.

    Raises:
        ConfigError: no directory, not an S2V model (named), or missing parts (each named with
            where it comes from).
    """
    if path is None:
        raise ConfigError(f"S2V needs --checkpoint DIR: the model folder of {SOURCE}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"checkpoint {root} is not a directory (download {SOURCE})")
    config = S2VConfig.from_wan_dict(require_kind(root, "s2v"))
    vae = root / VAE_SAFETENSORS if (root / VAE_SAFETENSORS).is_file() else root / VAE_FILE
    parts = {
        f"{INDEX_NAME} (the DiT's shard index)": root / INDEX_NAME,
        f"{VAE_FILE} (the Wan2.1 VAE)": vae,
        f"{T5_FILE} (the umT5 text encoder)": root / T5_FILE,
        f"{T5_TOKENIZER}/ (the umT5 tokenizer)": root / T5_TOKENIZER,
        f"{WAV2VEC2_DIR}/ (the speech encoder)": root / WAV2VEC2_DIR,
    }
    missing = [name for name, p in parts.items() if not p.exists()]
    if missing:
        raise ConfigError(
            f"{root} is incomplete: it lacks {', '.join(missing)}; these files come with {SOURCE}"
        )
    return S2VFiles(root, config, vae, root / T5_FILE, root / T5_TOKENIZER, root / WAV2VEC2_DIR)


def load_s2v_dit(
    root: str | Path,
    *,
    config: S2VConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> WanS2VDiT:
    """Load the S2V DiT from its shards (strict: every official key, nothing else).

    ``dtype`` casts floating-point weights, keeping the timestep path and modulation tables in
    float32 (as for the other DiTs).

    Raises:
        CheckpointError: a missing or truncated shard, a missing, renamed or mis-shaped key.
    """
    p = Path(root).expanduser()
    cfg = config if config is not None else S2VConfig.from_wan_dict(require_kind(p, "s2v"))
    state = load_state_dict(p, prefix=WEIGHTS_STEM)
    with torch.device("meta"):
        model = WanS2VDiT(cfg)
    check_state_dict(model, state, f"S2V checkpoint {p}")
    ready = {}
    for key in list(state):
        t = state.pop(key)
        if dtype is not None and t.is_floating_point():
            keep = any(part in key for part in FP32_KEY_PARTS)
            t = t.to(torch.float32 if keep else dtype)
        ready[key] = t.to(device)
    model.load_state_dict(ready, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def save_s2v_dit(model: WanS2VDiT, directory: str | Path) -> Path:
    """Write the model in the official layout (``config.json`` + one shard + index)."""
    from safetensors.torch import save_file

    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    name = f"{WEIGHTS_STEM}-00001-of-00001.safetensors"
    save_file(state, str(out / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": dict.fromkeys(state, name)}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=1, sort_keys=True))
    (out / CONFIG).write_text(json.dumps(model.s2v.to_wan_dict(), indent=1, sort_keys=True))
    return out


def resolve(
    device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """cuda + bfloat16 when CUDA is available, else cpu + float32 (explicit values win)."""
    return resolve_device(device, dtype)

"""The diffusion engine's checkpoint directory: layout, checks, loading and writing.

Layout of ``DIR`` (``run_avatar.py --engine diffusion --checkpoint DIR``)::

    DIR/
      liveface.json                 optional; which files make up the model, the stream settings
      dit/                          the DiT: official Wan2.2 layout (config.json +
                                    diffusion_pytorch_model-*.safetensors + index), e.g. the
                                    files of Wan-AI/Wan2.2-TI2V-5B, or a diffusers transformer/
      Wan2.2_VAE.pth                the Wan2.2 VAE (from Wan-AI/Wan2.2-TI2V-5B)
      taew2_2.pth                   optional tiny decoder (madebyollin/taehv), used when present
      wav2vec2/                     speech encoder, transformers files (facebook/wav2vec2-base-960h
                                    or another wav2vec2 / Whisper checkpoint)
      audio_adapter.safetensors     the audio adapter (a Soul / Wan-S2V-style training run on top
                                    of the DiT; written by ``dit_loading.save_audio_adapter``)
      text_embeddings.safetensors   precomputed prompt embeddings, name -> (tokens, 4096), and/or
      umt5/                         the umT5 text encoder + tokenizer files (text_encoder/ and
                                    tokenizer/ of Wan-AI/Wan2.2-TI2V-5B-Diffusers, merged)
      codebook.safetensors          optional offline k-means codebook (``codebook.save_codebook``)
      portrait.png                  optional default portrait

``liveface.json`` (every key optional; the defaults are the names above)::

    {"format": "liveface-diffusion", "version": 1,
     "dit": "dit", "audio_adapter": "audio_adapter.safetensors", "speech_encoder": "wav2vec2",
     "vae": {"file": "Wan2.2_VAE.pth", "config": "wan2.2"},
     "light_decoder": {"file": "taew2_2.pth", "config": "taew2_2"},
     "text_embeddings": "text_embeddings.safetensors", "text_encoder": "umt5",
     "default_prompt": "default", "codebook": "codebook.safetensors", "portrait": "portrait.png",
     "device": null, "dtype": null,
     "stream": {"chunk_latents": 2, "first_chunk_latents": 1,
                "motion": {"overlap": 2, "levels": [[2, 2], [4, 4]]},
                "codebook": {"source": "identity", "size": 256, "mode": "soft", "tau": null},
                "sampler": {"kind": "distilled", "steps": 4, "shift": 5.0},
                "decoder": "auto", "audio_context_ms": 1000, "idle": "silence",
                "compile": "auto"}}

A VAE ``config`` is a preset name (``wan2.2``, ``taew2_2``, ...), a config object, or null for a
``.safetensors`` file written by ``vae.save_vae`` (which carries its config). ``device`` / ``dtype``
default to cuda + bfloat16 when CUDA is available, else cpu + float32. ``stream.compile`` is
``auto`` (``torch.compile`` with CUDA graphs, ``reduce-overhead``, on CUDA; eager on the CPU),
``off``, or a ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``, ...).

Nothing is downloaded and nothing is ever initialised at random: a missing or incomplete
directory is a :class:`~liveface.errors.ConfigError` that says what to fetch, a damaged file a
:class:`~liveface.errors.CheckpointError`. :func:`write_bundle` writes the layout from models in
memory (tests and benchmarks use it with small random models).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveface.engines.diffusion.backends.precision import resolve_dtype
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.errors import CheckpointError, ConfigError

MANIFEST = "liveface.json"
FORMAT = "liveface-diffusion"
VERSION = 1

DOWNLOAD_HELP = """Put these in the checkpoint directory (layout: see diffusion/bundle.py):
  dit/                         config.json + diffusion_pytorch_model*.safetensors(+ index) of
                               https://huggingface.co/Wan-AI/Wan2.2-TI2V-5B
  Wan2.2_VAE.pth               from Wan-AI/Wan2.2-TI2V-5B
  wav2vec2/                    https://huggingface.co/facebook/wav2vec2-base-960h (all files)
  audio_adapter.safetensors    audio adapter weights from a Soul / Wan-S2V-style training run of
                               this DiT (not published; train one with this repository's adapter)
  text_embeddings.safetensors  precomputed prompt embeddings, or umt5/ with text_encoder/ and
                               tokenizer/ of https://huggingface.co/Wan-AI/Wan2.2-TI2V-5B-Diffusers
  taew2_2.pth (optional)       fast decoder, https://github.com/madebyollin/taehv
Then run: python run_avatar.py --engine diffusion --checkpoint DIR"""


@dataclass(frozen=True)
class Manifest:
    """The parsed ``liveface.json`` (paths relative to the directory)."""

    dit: str = "dit"
    audio_adapter: str = "audio_adapter.safetensors"
    speech_encoder: str = "wav2vec2"
    vae: str = "Wan2.2_VAE.pth"
    vae_config: Any = "wan2.2"
    light_decoder: str | None = "taew2_2.pth"
    light_decoder_config: Any = "taew2_2"
    text_embeddings: str | None = "text_embeddings.safetensors"
    text_encoder: str | None = "umt5"
    default_prompt: str = "default"
    codebook: str | None = "codebook.safetensors"
    portrait: str | None = "portrait.png"
    device: str | None = None
    dtype: str | None = None
    stream: GenerationConfig = field(default_factory=GenerationConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        data = dict(data)
        if data.pop("format", FORMAT) != FORMAT or int(data.pop("version", VERSION)) > VERSION:
            raise ConfigError(f"{MANIFEST} is not a {FORMAT} v{VERSION} manifest")
        values: dict[str, Any] = {}
        for key in ("vae", "light_decoder"):
            if isinstance(data.get(key), Mapping):
                entry = dict(data.pop(key))
                values[key] = entry.get("file")
                values[f"{key}_config"] = entry.get("config")
        if "stream" in data:
            values["stream"] = GenerationConfig.from_dict(data.pop("stream"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {MANIFEST} keys: {', '.join(unknown)}")
        return cls(**{**data, **values})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for key in self.__dataclass_fields__:
            if key.endswith("_config"):
                continue
            value = getattr(self, key)
            if key in ("vae", "light_decoder"):
                value = {"file": value, "config": getattr(self, f"{key}_config")}
            elif key == "stream":
                value = value.to_dict()
            out[key] = value
        return out


def missing_checkpoint(problem: str) -> ConfigError:
    """A ConfigError naming the problem and what to download where."""
    return ConfigError(f"the diffusion engine needs a checkpoint: {problem}.\n{DOWNLOAD_HELP}")


def read_manifest(path: str | Path | None) -> tuple[Path, Manifest]:
    """Check that ``path`` holds a complete checkpoint (without loading weights).

    Raises:
        ConfigError: no path, no directory, unreadable manifest, or missing parts (named, with
            where to download them).
    """
    if path is None:
        raise missing_checkpoint("no checkpoint directory is configured (set --checkpoint DIR)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise missing_checkpoint(f"{root} is not a directory")
    manifest = Manifest()
    if (root / MANIFEST).is_file():
        try:
            data = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{root / MANIFEST} is not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{root / MANIFEST} must hold a JSON object")
        manifest = Manifest.from_dict(data)
    m = manifest
    need = {
        "dit": m.dit,
        "vae": m.vae,
        "speech_encoder": m.speech_encoder,
        "audio_adapter": m.audio_adapter,
    }
    missing = [f"{name} ({rel})" for name, rel in need.items() if not (root / rel).exists()]
    texts = [t for t in (m.text_embeddings, m.text_encoder) if t and (root / t).exists()]
    if not texts:
        missing.append(f"text ({m.text_embeddings} or {m.text_encoder}/)")
    if missing:
        raise missing_checkpoint(f"{root} is incomplete, it lacks {', '.join(missing)}")
    return root, manifest


def resolve_device(
    device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """cuda + bfloat16 when CUDA is available, else cpu + float32; explicit values win."""
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is not None:
        dtype = resolve_dtype(dtype)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, dtype


def optional_file(root: Path, rel: str | None) -> Path | None:
    """``root / rel`` when ``rel`` is set and exists."""
    if rel is None:
        return None
    p = root / rel
    return p if p.exists() else None


def read_portrait(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB (a damaged file is a CheckpointError)."""
    from liveface.errors import BadInputError
    from liveface.pipeline.image import load_image

    try:
        return load_image(path)
    except BadInputError as e:
        raise CheckpointError(f"default portrait {path} cannot be read ({e})") from e


def write_bundle(
    path: str | Path,
    *,
    dit: Any,
    adapter: Any,
    speech_encoder: Any,
    vae: Any,
    light_decoder: Any = None,
    text_embeddings: Mapping[str, torch.Tensor] | None = None,
    text_encoder: str | Path | None = None,
    codebook: Any = None,
    portrait: np.ndarray | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Write a checkpoint directory from models in memory.

    Args:
        dit: a :class:`~liveface.engines.diffusion.dit.model.WanDiT` (written in the official
            layout).
        adapter: its :class:`~liveface.engines.diffusion.dit.audio_adapter.AudioAdapter`.
        speech_encoder: a transformers wav2vec2 / Whisper model (``save_pretrained``), or the
            folder of one, copied as it is (feature-extractor settings included).
        vae: a :class:`~liveface.engines.diffusion.vae.WanVAE` (written with its config).
        light_decoder: optional :class:`~liveface.engines.diffusion.vae.TAEHV`.
        text_embeddings: ``name -> (tokens, text_dim)``; must include the manifest's default.
        text_encoder: optional folder of a umT5 text encoder, copied as it is.
        codebook: optional :class:`~liveface.engines.diffusion.streaming.codebook.Codebook`.
        portrait: optional default portrait, uint8 ``(h, w, 3)``.
        manifest: stream settings etc.; file names are set here.

    Returns:
        the directory.
    """
    from liveface.engines.diffusion.checkpoint.dit import save_audio_adapter, save_dit
    from liveface.engines.diffusion.streaming.codebook import save_codebook
    from liveface.engines.diffusion.text.encoders import save_text_embeddings
    from liveface.engines.diffusion.vae import save_vae

    root = Path(path).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    base = manifest if manifest is not None else Manifest()
    save_dit(dit, root / "dit")
    save_audio_adapter(adapter, root / "audio_adapter.safetensors")
    if isinstance(speech_encoder, str | Path):
        copy_tree(Path(speech_encoder), root / "wav2vec2")
    else:
        speech_encoder.save_pretrained(root / "wav2vec2")
    if text_encoder is not None:
        copy_tree(Path(text_encoder), root / "umt5")
    save_vae(vae, root / "vae.safetensors")
    light = None
    if light_decoder is not None:
        light = save_vae(light_decoder, root / "light_decoder.safetensors").name
    if text_embeddings is not None:
        save_text_embeddings(root / "text_embeddings.safetensors", text_embeddings)
    if codebook is not None:
        save_codebook(root / "codebook.safetensors", codebook)
    if portrait is not None:
        import cv2

        cv2.imwrite(str(root / "portrait.png"), np.ascontiguousarray(portrait[:, :, ::-1]))
    out = Manifest(
        **{
            **{k: getattr(base, k) for k in base.__dataclass_fields__},
            "dit": "dit",
            "audio_adapter": "audio_adapter.safetensors",
            "speech_encoder": "wav2vec2",
            "vae": "vae.safetensors",
            "vae_config": None,
            "light_decoder": light,
            "light_decoder_config": None,
            "text_embeddings": "text_embeddings.safetensors" if text_embeddings else None,
            "text_encoder": "umt5" if text_encoder is not None else None,
            "codebook": "codebook.safetensors" if codebook is not None else None,
            "portrait": "portrait.png" if portrait is not None else None,
        }
    )
    (root / MANIFEST).write_text(json.dumps(out.to_dict(), indent=2))
    return root


def copy_tree(src: Path, dst: Path) -> None:
    """Copy folder ``src`` to ``dst`` (replacing it), hard-linking files where the filesystem
    allows: model weights are large and never written in place."""

    def link(a: str, b: str) -> None:
        try:
            Path(b).hardlink_to(a)
        except OSError:
            shutil.copy2(a, b)

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=link)

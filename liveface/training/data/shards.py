"""The prepared dataset on disk: safetensors shards plus a JSON index.

Layout of a dataset directory (written by ``prepare``, read by ``train``, ``distill``,
``codebook``)::

    DATA/
      dataset.json             format, the preparation settings, shards and their clips,
                               held-out clips, skipped clips by reason
      prompts.safetensors      prompt name -> text embedding (tokens, text_dim)
      silence.safetensors      "K" -> speech-encoder states of digital silence for a chunk of
                               K latent frames (the engine's idle conditioning)
      progress.jsonl           one line per finished video (resuming skips them)
      portraits/ID.png         the reference frame of each held-out clip (previews, evaluation)
      shards/shard-000000.safetensors ...

A shard holds, for each of its clips ``i``:

- ``i.latents`` ``(C, T, h, w)``: VAE latents of the clip's ``1 + 4 (T - 1)`` frames;
- ``i.reference`` ``(C, 1, h, w)``: the latent of one frame encoded alone (the portrait);
- ``i.audio``: speech-encoder hidden states, ``(positions, layers, features, dim)`` per chunk
  position (``exact``) or ``(layers, features, dim)`` on the clip's timeline (``stitched``), see
  :mod:`.audio`;
- ``i.voiced`` ``(frames,)`` uint8: the runtime's voice activity per video frame;
- ``i.wave`` ``(samples,)`` float32: the clip's 16 kHz audio (previews, evaluation, checks);

and the clips' descriptions (id, source, first frame, prompt) as JSON in the file's metadata.
safetensors reads each tensor (or a slice of it) without loading the rest of the shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveface.errors import CheckpointError, ConfigError
from liveface.pipeline.image import load_image

FORMAT = "liveface-talking-shards"
VERSION = 1
INDEX = "dataset.json"
PROMPTS = "prompts.safetensors"
SILENCE = "silence.safetensors"
PROGRESS = "progress.jsonl"
PORTRAITS = "portraits"
SHARD_DIR = "shards"
TENSORS = ("latents", "reference", "audio", "voiced", "wave")


@dataclass(frozen=True)
class ClipInfo:
    """One clip's description.

    Attributes:
        id: unique name (source stem and first frame).
        source: the video it was cut from.
        start: its first frame in the source, at the dataset's frame rate.
        frames: video frames (``1 + 4 (latents - 1)``).
        latents: latent frames.
        prompt: key of its text embedding in ``prompts.safetensors``.
        shard: the shard file (relative to the dataset directory).
    """

    id: str
    source: str
    start: int
    frames: int
    latents: int
    prompt: str
    shard: str = ""


@dataclass
class ClipTensors:
    """A clip's tensors (see the module docstring for shapes)."""

    latents: torch.Tensor
    reference: torch.Tensor
    audio: torch.Tensor
    voiced: torch.Tensor
    wave: torch.Tensor

    def as_dict(self, index: int) -> dict[str, torch.Tensor]:
        return {f"{index}.{name}": getattr(self, name).contiguous() for name in TENSORS}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ShardWriter:
    """Buffers clips and writes them ``clips_per_shard`` at a time (atomically: a crash never
    leaves a half-written shard), then records the videos they came from as done."""

    def __init__(self, root: Path, config: Mapping[str, Any], clips_per_shard: int) -> None:
        self.root = root
        self.clips_per_shard = clips_per_shard
        (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.index: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "config": dict(config),
            "shards": [],
            "holdout": [],
            "skipped": {},
            "videos": 0,
        }
        if (root / INDEX).is_file():
            old = read_index(root)
            if old["config"] != json.loads(json.dumps(dict(config))):
                raise ConfigError(
                    f"{root} was prepared with other settings; use another output directory "
                    "or the same settings to resume"
                )
            self.index = old
        self._clips: list[tuple[ClipInfo, ClipTensors]] = []
        self._videos: list[dict[str, Any]] = []

    def done_videos(self) -> set[str]:
        """Videos finished in an earlier run (their clips are in written shards)."""
        p = self.root / PROGRESS
        if not p.is_file():
            return set()
        return {json.loads(line)["video"] for line in p.read_text().splitlines() if line.strip()}

    def add_clip(self, info: ClipInfo, tensors: ClipTensors) -> None:
        self._clips.append((info, tensors))

    def finish_video(self, video: str, clips: int, skipped: Mapping[str, int]) -> None:
        """Mark ``video`` done once its buffered clips are on disk."""
        self._videos.append({"video": video, "clips": clips, "skipped": dict(skipped)})
        if len(self._clips) >= self.clips_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered clips as one shard, then the index and the progress."""
        from safetensors.torch import save_file

        if self._clips:
            name = f"{SHARD_DIR}/shard-{len(self.index['shards']):06d}.safetensors"
            tensors: dict[str, torch.Tensor] = {}
            infos = []
            for i, (info, t) in enumerate(self._clips):
                tensors.update(t.as_dict(i))
                infos.append({k: v for k, v in asdict(info).items() if k != "shard"})
            tmp = self.root / (name + ".tmp")
            save_file(tensors, str(tmp), metadata={"clips": json.dumps(infos)})
            os.replace(tmp, self.root / name)
            self.index["shards"].append({"file": name, "clips": infos})
        skipped = self.index["skipped"]
        for v in self._videos:
            for reason, n in v["skipped"].items():
                skipped[reason] = skipped.get(reason, 0) + n
        self.index["videos"] += len(self._videos)
        _atomic_write(self.root / INDEX, json.dumps(self.index, indent=1))
        with (self.root / PROGRESS).open("a") as f:
            for v in self._videos:
                f.write(json.dumps(v) + "\n")
        self._clips, self._videos = [], []

    def set_holdout(self, ids: list[str]) -> None:
        self.index["holdout"] = list(ids)
        _atomic_write(self.root / INDEX, json.dumps(self.index, indent=1))


def read_index(root: str | Path) -> dict[str, Any]:
    """The parsed ``dataset.json``.

    Raises:
        ConfigError: not a prepared dataset directory.
    """
    p = Path(root).expanduser() / INDEX
    if not p.is_file():
        raise ConfigError(f"{p.parent} is not a prepared dataset (no {INDEX}); run prepare first")
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise ConfigError(f"{p} is not valid JSON ({e})") from e
    if data.get("format") != FORMAT or int(data.get("version", 0)) > VERSION:
        raise ConfigError(f"{p} is not a {FORMAT} v{VERSION} index")
    return data


class ShardDataset:
    """Read access to a prepared dataset: clip descriptions and (slices of) their tensors."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.index = read_index(self.root)
        self.config: dict[str, Any] = self.index["config"]
        self.clips: list[ClipInfo] = []
        self._keys: list[tuple[str, int]] = []
        for shard in self.index["shards"]:
            for i, c in enumerate(shard["clips"]):
                self.clips.append(ClipInfo(**c, shard=shard["file"]))
                self._keys.append((shard["file"], i))
        self.holdout = set(self.index.get("holdout", []))
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def training_clips(self) -> list[int]:
        """Indices of the clips not held out."""
        return [i for i, c in enumerate(self.clips) if c.id not in self.holdout]

    def held_out_clips(self) -> list[int]:
        return [i for i, c in enumerate(self.clips) if c.id in self.holdout]

    def _handle(self, shard: str) -> Any:
        from safetensors import SafetensorError, safe_open

        if shard not in self._handles:
            try:
                self._handles[shard] = safe_open(str(self.root / shard), framework="pt")
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{self.root / shard} is not readable ({e})") from e
        return self._handles[shard]

    def tensor(self, clip: int, name: str, index: tuple[slice, ...] | None = None) -> torch.Tensor:
        """Clip ``clip``'s tensor ``name`` (one of :data:`TENSORS`), or a slice of it."""
        shard, i = self._keys[clip]
        f = self._handle(shard)
        key = f"{i}.{name}"
        if index is None:
            return f.get_tensor(key)
        return f.get_slice(key)[index]

    def load(self, clip: int) -> ClipTensors:
        return ClipTensors(**{name: self.tensor(clip, name) for name in TENSORS})

    def portrait(self, clip: int) -> np.ndarray | None:
        """The saved reference frame (uint8 RGB) of a held-out clip, or None."""
        p = self.root / PORTRAITS / f"{self.clips[clip].id}.png"
        return load_image(p) if p.is_file() else None

    def prompts(self) -> dict[str, torch.Tensor]:
        return _read_tensors(self.root / PROMPTS)

    def silence(self) -> dict[int, torch.Tensor]:
        """Speech-encoder states of silence per chunk length (latent frames)."""
        return {int(k): v for k, v in _read_tensors(self.root / SILENCE).items()}

    def latent_frames(self) -> Iterator[torch.Tensor]:
        """Every training clip's latents ``(C, T, h, w)``, one clip at a time."""
        for i in self.training_clips():
            yield self.tensor(i, "latents")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path} is missing; the dataset is incomplete (run prepare again)")
    return load_file(str(path))

"""A disk cache of prepared face-model graphs, so that a process pays the preparation once ever.

Cutting the face-mesh model around MediaPipe's custom operators (:mod:`.tflite`) parses the whole
flatbuffer in Python, about 3 s on a small CPU: fine once, too much for every process that opens a
portrait (an offline render, an engine process). The result is plain data (sub-models as bytes,
step descriptions, constant tensors) and is stored as one ``.npz`` per source model, keyed by the
model's hash, in ``$LIVEFACE_CACHE`` or ``$XDG_CACHE_HOME/liveface`` (``~/.cache/liveface``).
Nothing is unpickled (``allow_pickle=False``); an unreadable or unwritable cache is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped when the stored format or the cutting changes.
FORMAT = "1"


def cache_dir() -> Path:
    base = os.environ.get("LIVEFACE_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "liveface"


def _path(content: bytes) -> Path:
    digest = hashlib.sha256(content).hexdigest()[:24]
    return cache_dir() / f"graph-{digest}-v{FORMAT}.npz"


def load(content: bytes) -> dict[str, Any] | None:
    """The plan stored for model ``content``: ``{"meta": dict, "blobs": [bytes], "consts":
    {int: ndarray}}``, or None."""
    path = _path(content)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            blobs = [data[f"blob{k}"].tobytes() for k in range(meta["blobs"])]
            consts = {int(k): data[f"const{k}"] for k in meta["consts"]}
    except (OSError, KeyError, ValueError):
        return None
    return {"meta": meta, "blobs": blobs, "consts": consts}


def store(content: bytes, meta: dict[str, Any], blobs: list[bytes],
          consts: dict[int, np.ndarray]) -> None:  # fmt: skip
    """Keep a plan for model ``content`` (atomically; silently skipped where it cannot)."""
    path = _path(content)
    arrays = {f"blob{k}": np.frombuffer(b, np.uint8) for k, b in enumerate(blobs)}
    arrays.update({f"const{k}": v for k, v in consts.items()})
    meta = {**meta, "blobs": len(blobs), "consts": [str(k) for k in consts]}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

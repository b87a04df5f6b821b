"""Wheels of the distributions installed in this environment, for offline installs in tests.

``wheelhouse(requirements, out)`` repacks, from this interpreter's site-packages, every installed
distribution that the requirements need (their closure, markers evaluated, extras followed) into
``out/*.whl`` using the files listed in each distribution's RECORD and the tags of its WHEEL file.
``pip install --no-index --find-links out ...`` then resolves exactly as from an index that holds
only what this environment has: a requirement missing here fails the install, as it should.
Console scripts and data files outside site-packages are left out (pip writes scripts anew).
"""

from __future__ import annotations

import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, metadata.Distribution]:
    return {_norm(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(requirements: list[str]) -> list[metadata.Distribution]:
    """Installed distributions needed by ``requirements`` (``Requirement`` strings)."""
    have = _installed()
    seen: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        env = {**default_environment(), "extra": extra}
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _norm(req.name)
        dist = have.get(name)
        if dist is None:
            continue  # not here: the offline install will report it
        for ex in req.extras:
            todo.extend((Requirement(r), ex) for r in dist.requires or [])
        if name in seen:
            continue
        seen[name] = dist
        todo.extend((Requirement(r), "") for r in dist.requires or [])
    return list(seen.values())


def _tag(dist: metadata.Distribution) -> str:
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags]
    # compressed tag sets (py2.py3-none-any): every tag the distribution was installed with
    return "-".join(".".join(dict.fromkeys(p[k] for p in parts)) for k in range(3))


def repack(dist: metadata.Distribution, out: Path) -> Path:
    """One installed distribution as ``out/<name>-<version>-<tag>.whl`` (stored, not deflated)."""
    name = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    path = out / f"{name}-{dist.version}-{_tag(dist)}.whl"
    base = Path(str(dist.locate_file("")))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in dist.files or []:
            rel = f.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            src = base / rel
            if src.is_file():
                zf.write(src, rel)
    return path


def wheelhouse(requirements: list[str], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [repack(d, out) for d in closure(requirements)]

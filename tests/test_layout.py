"""The package's layers point one way, and its modules stay readable (docs/architecture.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "liveface"
#: Lower layers never import higher ones (lazy imports inside functions included). Training and
#: runtime stand side by side and import neither each other; nor do signaling and protocol import
#: the client.
LAYERS = {
    "liveface.errors": 0,
    "liveface.engines.base": 1,
    "liveface.pipeline": 2,
    "liveface.engines": 3,
    "liveface.runtime": 4,
    "liveface.training": 4,
    "liveface.protocol": 5,
    "liveface.signaling": 5,
    "liveface.client": 6,
    "liveface.integrations": 7,
    "liveface.cli": 8,
    "liveface.__main__": 8,
}
#: Siblings of one rank that must not import each other.
APART = [{"liveface.runtime", "liveface.training"}]
MAX_LINES = 400


def _layer(module: str) -> str | None:
    found = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(found, key=len) if found else None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "liveface" or n.startswith("liveface.")]


def upward_imports() -> list[str]:
    bad = []
    for name, path in _modules():
        mine = _layer(name)
        if mine is None:
            continue  # the package's own __init__
        for target in _imports(path):
            theirs = _layer(target)
            if theirs is None:
                continue
            if LAYERS[theirs] > LAYERS[mine] or (
                theirs != mine and any({mine, theirs} <= pair for pair in APART)
            ):
                bad.append(f"{name} imports {target}")
    return bad


def test_no_module_imports_a_layer_above_it():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "liveface"
    (fake / "pipeline").mkdir(parents=True)
    (fake / "pipeline" / "x.py").write_text("def f():\n    from liveface.runtime import config\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert upward_imports() == ["liveface.pipeline.x imports liveface.runtime"]


def test_modules_stay_under_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules()}
    assert len(sizes) > 100
    assert {n: k for n, k in sizes.items() if k > MAX_LINES} == {}

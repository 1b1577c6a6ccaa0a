"""The package dependency direction of ``src/lmalloc``, checked by walking every import (ast).

``LAYERS`` is the one place the allowed direction is written (docs/architecture.md shows it):
a package may import its own modules and any package of a *lower* layer; packages of one layer
may not import each other, and nothing imports upward. Imports inside functions count too: a
lazy import is still a dependency, and hiding a cycle inside a function is how they creep in.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import lmalloc

SRC = Path(lmalloc.__file__).parent

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"testing"}),
    frozenset({"cli"}),
    frozenset({"run"}),
    frozenset({"plan"}),
    frozenset({"search", "compress", "report"}),
    frozenset({"evaluate"}),
    frozenset({"train"}),
    frozenset({"cost", "scaling", "data"}),
    frozenset({"model"}),
    frozenset({"layout", "rundir"}),
    frozenset({"errors", "__init__"}),
)
"""Top to bottom. ``testing`` (samplers for the tests, registered through the CLI) sits on
top; ``evaluate`` above ``train`` (fine-tuning runs the trainer, and the trainer's validation
loss lives in ``train.validation``); ``cost`` above ``model`` (it prices a model's shape);
``__init__`` is ``lmalloc`` itself (its version)."""

LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str | None:
    """``lmalloc.plan.ladder`` → ``plan``; None for modules outside lmalloc."""
    parts = module.split(".")
    if parts[0] != "lmalloc":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """The lmalloc packages a source file imports (absolute and relative imports)."""
    here = list(path.relative_to(SRC.parent).parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from lmalloc import scaling`` names the package in the alias
            names = [f"{mod}.{a.name}" if (SRC / a.name).is_dir()
                     or (SRC / f"{a.name}.py").exists() else mod
                     for a in node.names] if mod == "lmalloc" else [mod]
        out.update(p for p in map(_package, names) if p is not None)
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        pkg = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        graph.setdefault(pkg, set()).update(_imports(path) - {pkg})
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for pkg, deps in sorted(graph.items()):
        if pkg not in LAYER_OF:
            bad.append(f"{pkg}: not in LAYERS (place it)")
            continue
        for dep in sorted(deps):
            if dep not in LAYER_OF:
                bad.append(f"{pkg} imports {dep}, which is not in LAYERS")
            elif LAYER_OF[dep] <= LAYER_OF[pkg]:
                bad.append(f"{pkg} (layer {LAYER_OF[pkg]}) imports {dep} "
                           f"(layer {LAYER_OF[dep]}): upward or sideways")
    return bad


def test_no_package_imports_a_higher_or_sibling_layer() -> None:
    assert violations(_graph()) == []


def test_the_check_can_fail() -> None:
    graph = _graph()
    graph["model"] = graph["model"] | {"train"}
    graph["plan"] = graph["plan"] | {"run"}
    graph["scaling"] = graph["scaling"] | {"cost"}
    assert violations(graph) == [
        "model (layer 8) imports train (layer 6): upward or sideways",
        "plan (layer 3) imports run (layer 2): upward or sideways",
        "scaling (layer 7) imports cost (layer 7): upward or sideways"]


def test_planning_and_the_run_context_import_without_torch() -> None:
    """``plan`` is planning math and the context only reads artifacts: neither needs torch."""
    import subprocess
    import sys

    code = ("import sys, lmalloc.plan.planner, lmalloc.plan.recipe, lmalloc.plan.split, "
            "lmalloc.plan.allocate, lmalloc.layout, lmalloc.run.context; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _modules_with_examples() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if any(">>> " in ln and "doctest: +SKIP" not in ln for ln in lines):
            rel = path.relative_to(SRC.parent).with_suffix("")
            out.append(".".join(p for p in rel.parts if p != "__init__"))
    return out


@pytest.mark.parametrize("name", _modules_with_examples())
def test_doctests(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``>>>`` example of every package runs (not only scaling's and cost's)."""
    monkeypatch.setenv("LMALLOC_PROFILE_DIR", str(tmp_path))  # no saved profiles
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, name

"""The runnable examples in the scaling docstrings stay runnable (and right)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "estimate",
    "isoflop",
    "laws",
    "optimal",
    "parametric",
    "powerlaw",
    "simulate",
    "summary",
    "table",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"lmalloc.scaling.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module.__name__}"


def test_scaling_imports_without_torch() -> None:
    import subprocess
    import sys

    code = "import lmalloc.scaling, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

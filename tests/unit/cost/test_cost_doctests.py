"""The runnable examples in the cost package's docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["budget", "hardware", "memory", "time_model", "estimate"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMALLOC_PROFILE_DIR", str(tmp_path))  # no saved profiles
    module = importlib.import_module(f"lmalloc.cost.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_cost_imports_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, lmalloc.cost, lmalloc.cost.memory, lmalloc.cost.time_model, "
            "lmalloc.cost.estimate, lmalloc.cost.profile; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

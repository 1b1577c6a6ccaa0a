"""The cost package imports without torch (doctests: tests/unit/test_architecture.py)."""

from __future__ import annotations


def test_cost_imports_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, lmalloc.cost, lmalloc.cost.memory, lmalloc.cost.time_model, "
            "lmalloc.cost.estimate, lmalloc.cost.profile; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

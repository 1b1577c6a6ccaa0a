"""The scaling package imports without torch (doctests: tests/unit/test_architecture.py)."""

from __future__ import annotations


def test_scaling_imports_without_torch() -> None:
    import subprocess
    import sys

    code = "import lmalloc.scaling, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

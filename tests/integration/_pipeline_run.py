"""The tiny complete ``lmalloc run`` that integration tests share (options and budget).

Beside the tests rather than in conftest.py so that a subprocess (the kill-and-resume test)
can import the same options.
"""

from __future__ import annotations

from pathlib import Path

from lmalloc.plan.recipe import Recipe
from lmalloc.run import RunOptions

BUDGET = "4e10flops"
RECIPE = Recipe(seq_len=32, batch_tokens=512, micro_batch=16, eval_tokens=2048, min_params=2e3)


def options(corpus: Path, **kw: object) -> RunOptions:
    base = {"data": (str(corpus),), "budget": BUDGET, "hardware": "cpu", "vocab_size": 384,
            "recipe": RECIPE, "bootstrap": 10}
    return RunOptions(**{**base, **kw})  # type: ignore[arg-type]

"""The recipe a run explored with (its options in the manifest) is in ``lmalloc status`` and
in the report's budget section; a folder no ``lmalloc run`` made shows none."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from lmalloc.plan.recipe import Recipe
from lmalloc.report.artifacts import run_status
from lmalloc.report.build import build_report
from lmalloc.rundir import RunDir

pytest.importorskip("matplotlib")


def test_status_and_report_show_the_recipe(run_factory: Callable[..., Path]) -> None:
    root = run_factory("split")
    assert run_status(root)["recipe"] is None  # no recipe among the options
    run = RunDir(root)
    opts = run.manifest()["run_options"]
    recipe = asdict(Recipe(seq_len=1024, batch_tokens=524288, min_params=1e7, seed=0))
    run.update_manifest(run_options={**opts, "recipe": recipe, "vocab_size": 32768,
                                     "seed": 5})
    shown = run_status(root)["recipe"]
    assert shown["seq_len"] == 1024 and shown["vocab_size"] == 32768
    assert "seed" not in shown  # --seed, not the recipe's (always 0 in the options)
    html = build_report(root).read_text(encoding="utf-8")
    assert "The recipe every training shared" in html
    assert re.search(r"<td>batch_tokens</td><td[^>]*>524288</td>", html)
    assert re.search(r"<td>vocab_size</td><td[^>]*>32768</td>", html)

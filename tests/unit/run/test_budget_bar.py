"""The exploration stages' progress bar follows the run's ledger, on stderr."""

from __future__ import annotations

from pathlib import Path

from lmalloc.run.budget_bar import BudgetBar
from lmalloc.rundir import RunDir


def test_bar_follows_the_ledger(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.charge("ladder", flops=0.0, seconds=30.0)
    with BudgetBar(run, "ladder", 120.0, "seconds", enabled=True) as bar:
        task = bar._bar.tasks[0]
        assert task.completed == 30.0 and task.total == 120.0
        run.charge("ladder", flops=0.0, seconds=200.0)
        bar.update(object())  # as a search on_poll: the study is ignored
        assert task.completed == 120.0  # capped at the stage's share
    assert bar._bar is None


def test_disabled_bar_draws_nothing(tmp_path: Path) -> None:
    with BudgetBar(RunDir(tmp_path / "r"), "search", 10.0, "flops", enabled=False) as bar:
        bar.update()
        assert bar._bar is None

"""A first attempt that failed before any training does not lock its run folder; one that
trained names the options that differ; a budget used up before exploring says what used it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.run import RunOptions
from lmalloc.run.context import RunContext
from lmalloc.run.pipeline import check_options
from lmalloc.run.stages import split


def _ctx(root: Path, said: list[str], **opts: object) -> RunContext:
    return RunContext(root, RunOptions(**opts), say=said.append)  # type: ignore[arg-type]


def test_a_failed_attempt_before_training_accepts_new_options(tmp_path: Path) -> None:
    said: list[str] = []
    first = _ctx(tmp_path / "r", said, data=("typo",), budget="2m", hardware="cpu")
    check_options(first)
    first.run.record_stage("prepare")  # what the first attempt got to before failing
    first.run.record_stage("profile")
    first.run.charge("prepare", 0.0, 3.0)
    again = _ctx(tmp_path / "r", said, data=("corpus",), budget="10m", hardware="cpu")
    check_options(again)  # no error
    m = again.run.manifest()
    assert m["run_options"]["data"] == ["corpus"] and m["run_options"]["budget"] == "10m"
    assert set(m["stages"]) == {"profile"}  # same hardware: the profile is kept
    assert "stopped before any training" in said[-1] and "--budget '2m' → '10m'" in said[-1]


def test_a_run_that_trained_names_the_option_to_restart(tmp_path: Path) -> None:
    said: list[str] = []
    first = _ctx(tmp_path / "r", said, budget="2m", hardware="cpu")
    check_options(first)
    first.run.charge("search", 1e9, 5.0)
    with pytest.raises(UserError) as e:
        check_options(_ctx(tmp_path / "r", said, budget="10m", hardware="cpu"))
    msg = str(e.value)
    assert "--budget '2m' → '10m'" in msg and "trained already (search)" in msg
    assert "--run runs/NEW" in msg


def test_a_budget_used_up_before_exploring_says_what_used_it(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "r", [], budget="2m", hardware="cpu")
    ctx.run.charge("prepare", 0.0, 136.05)
    with pytest.raises(UserError) as e:
        split(ctx)
    msg = str(e.value)
    assert "the budget '2m' (120 s) was used up before exploring (prepare 136.1 s)" in msg
    assert "invalid budget" not in msg

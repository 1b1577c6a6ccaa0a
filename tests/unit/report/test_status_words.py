"""The summary and ``lmalloc status`` say results plainly: on which side of its interval a loss
fell, every loss with its unit, stage times in pipeline order, and "failed" after a failure."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lmalloc.cli import register
from lmalloc.errors import UserError
from lmalloc.report.artifacts import run_status
from lmalloc.report.words import vs_interval
from lmalloc.rundir import RunDir

app = register()


def test_outside_the_interval_says_the_direction() -> None:
    assert vs_interval(6.49, 5.9, 6.18) == ("OUTSIDE the interval: 0.31 above its upper end "
                                            "(worse than predicted)")
    assert vs_interval(5.5, 5.9, 6.18).startswith("OUTSIDE the interval: 0.40 below its lower")
    assert "better than predicted" in vs_interval(5.5, 5.9, 6.18)
    assert vs_interval(6.0, 5.9, 6.18) == "inside the interval"
    assert vs_interval(9.0, 5.9, None) == "inside the interval"  # no upper end known


def test_status_after_a_failed_run_says_failed(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.record_stage("prepare")
    run.charge("search", flops=1e9, seconds=3.0)  # the stage that was under way
    run.record_failure("run", UserError("budget too small: 190 s given, 242 s needed"))
    s = run_status(run.root)
    states = {row["stage"]: row["state"] for row in s["stages"]}
    assert states["prepare"] == "done" and states["search"] == "failed"
    assert "exploring" not in s["summary"]
    assert "The last `lmalloc run` failed (UserError: budget too small" in s["summary"]
    # a later success clears it: the same charged stage is "running" again until it finishes
    run.record_failure("run", None)
    s = run_status(run.root)
    assert s["failure"] is None and "failed" not in s["summary"]
    assert {r["stage"]: r["state"] for r in s["stages"]}["search"] == "running"


def test_a_run_with_a_typo_in_data_is_reported_failed(tmp_path: Path) -> None:
    root = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--run", str(root), "--data",
                                   str(tmp_path / "no-such-corpus"), "--budget", "2m"])
    assert res.exit_code != 0, res.output
    res = CliRunner().invoke(app, ["status", "--run", str(root), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["failure"]["command"] == "run" and "no-such-corpus" in s["failure"]["error"]
    res = CliRunner().invoke(app, ["status", "--run", str(root)], env={"COLUMNS": "200"})
    assert "failed" in res.output and "exploring" not in res.output


def test_run_printout_lists_stage_times_in_pipeline_order_with_units(capsys) -> None:
    from lmalloc.cli.plan import _render_summary

    s = {"allocation": {"N": 1_000_000, "D": 20_000_000, "lr": 3e-3, "batch_tokens": 4096,
                        "model": {"n_layer": 4, "d_model": 128}},
         "predicted": {"loss": {"value": 4.0, "low": 3.9, "high": 4.1}},
         "achieved": {"val_loss": 4.3, "eval_bpb": 1.5}, "within_interval": False,
         "budget": {"unit": "seconds", "total": 900.0, "text": "15m"},
         "spent": {"seconds": 880.0},
         "by_stage": {"train": {"seconds": 400.0, "flops": 1.0}, "prepare": {"seconds": 5.0,
                      "flops": 0.0}, "search": {"seconds": 200.0, "flops": 1.0},
                      "report": {"seconds": 3.0, "flops": 0.0}}}
    _render_summary(s)
    out = " ".join(capsys.readouterr().out.split())
    assert out.index("prepare ") < out.index("search ") < out.index("train ") \
        < out.index("report ")
    assert "4.3000 nats/token" in out and "1.5000 bits/byte" in out
    assert "0.20 above its upper end (worse than predicted)" in out


def test_run_printout_names_both_losses_and_says_the_verdicts(capsys) -> None:
    from lmalloc.cli.plan import _render_summary

    s = {"allocation": {"N": 100_672, "D": 21_583_872, "lr": 2e-3, "batch_tokens": 2048,
                        "model": {"n_layer": 2, "d_model": 64}},
         "predicted": {"loss": {"value": 3.77, "low": 3.11, "high": 4.25}},
         "achieved": {"val_loss": 3.85, "eval_loss": 3.38, "eval_bpb": 1.47},
         "budget": {"unit": "seconds", "total": 900.0, "text": "15m"},
         "spent": {"seconds": 880.0}, "by_stage": {},
         "warnings": ["the fitted exponent alpha = 10 is outside [0.02, 2.0]"],
         "verdicts": [{"topic": "fit", "severity": "problem",
                       "text": "The scaling-law fit is degenerate (alpha = 10 is outside "
                               "[0.02, 2.0])"},
                      {"topic": "backtest", "severity": "ok", "text": "Fitted without"}]}
    _render_summary(s)
    out = " ".join(capsys.readouterr().out.split())
    assert "achieved 3.8500 nats/token on the final run's own validation sample" in out
    assert "3.3800 nats/token, 1.4700 bits/byte on the whole val split" in out
    assert "problem: fit: The scaling-law fit is degenerate (alpha = 10 is outside [0.02, " \
           "2.0])" in out
    assert "Fitted without" not in out  # ok verdicts stay in the report
    assert out.count("alpha = 10") == 1  # the fit's warning is said once, by its verdict

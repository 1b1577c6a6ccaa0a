"""End to end: ``lmalloc run`` on a tiny corpus under a small compute budget, its resume after
SIGKILL, and ``lmalloc plan --from`` on the finished run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _pipeline_run import options as _options  # finished_run: conftest.py

from lmalloc.errors import UserError
from lmalloc.run import run_pipeline
from lmalloc.rundir import RunDir


def test_summary_splits_each_training_stage_into_its_parts(finished_run: Path) -> None:
    by = json.loads(RunDir(finished_run).path("summary.json").read_text())["by_stage"]
    parts = ("train_seconds", "eval_seconds", "checkpoint_seconds", "startup_seconds")
    for stage in ("search", "ladder", "train"):
        s = by[stage]
        assert all(s[p] >= 0 for p in parts) and s["train_seconds"] > 0, stage
        assert s["eval_seconds"] > 0 and s["startup_seconds"] > 0, stage
        # the parts and the idle remainder add up to what the stage charged
        assert sum(s[p] for p in parts) + s.get("idle_seconds", 0.0) == pytest.approx(
            s["seconds"]), stage
    assert "train_seconds" not in by["prepare"]  # a stage that does not train: one figure


def test_run_writes_every_stage_and_stays_in_budget(finished_run: Path) -> None:
    run = RunDir(finished_run)
    for name in ("data/data.json", "split.json", "search.json", "ladder.csv", "laws.json",
                 "plan.json", "final/checkpoint", "eval.json", "summary.json", "report.html"):
        assert run.path(name).exists(), name
    spent = run.spent()["flops"]
    assert 0.5 * 4e10 < spent <= 4e10 * 1.02  # explores and trains, inside the budget
    summary = json.loads(run.path("summary.json").read_text())
    plan = json.loads(run.path("plan.json").read_text())
    final_cfg = json.loads(run.path("final/config.json").read_text())
    assert final_cfg["model"]["d_model"] == plan["model"]["d_model"]
    assert final_cfg["train"]["lr"] == plan["train"]["lr"]
    pred = summary["predicted"]["loss"]
    assert pred["low"] <= pred["value"] <= pred["high"]
    assert summary["achieved"]["status"] == "completed"
    assert 0 < summary["achieved"]["val_loss"] < 10
    assert summary["recipe"]["seq_len"] == final_cfg["train"]["seq_len"] == 32  # the recipe's
    # the verdicts on the real artifacts: the same ones at the top of report.html
    topics = {v["topic"] for v in summary["verdicts"]}
    assert {"fit", "search", "interval", "budget", "final run", "losses"} <= topics
    assert '<section id="verdicts"' in run.path("report.html").read_text()
    ladder = run.path("ladder.csv").read_text().splitlines()
    assert len(ladder) - 1 >= 8  # enough points for the 5-parameter fit
    # the plan names where its size came from; the IsoFLOP levels are the ladder's branches
    from lmalloc.scaling.degeneracy import size_rule

    laws = json.loads(run.path("laws.json").read_text())
    assert plan["allocation"]["size_source"]["source"] == size_rule(laws)["source"]
    assert laws["isoflop_check"]["compute"] == "measured FLOPs"
    # the interval carries the law's error in compute exactly when the run could measure it
    interval = plan["predicted"]["interval"]
    measured = laws["extrapolation"]["available"]
    assert ("extrapolation" in interval["parts"]) is measured
    assert ("extrapolation" in interval["not_measured"]) is not measured
    split = run.manifest()["budget_split"]
    assert 0 < split["explore_fraction"] < 1
    stages = set(run.manifest()["stages"])
    assert {"split", "search", "ladder", "fit", "plan", "train", "eval", "summary",
            "report"} <= stages


def test_rerun_is_a_no_op(finished_run: Path, tiny_corpus_dir: Path) -> None:
    run = RunDir(finished_run)
    before = len(run.manifest()["ledger"])
    run_pipeline(finished_run, _options(tiny_corpus_dir))
    assert len(run.manifest()["ledger"]) == before  # nothing retrained or charged twice


def test_resume_with_other_options_is_refused(finished_run: Path,
                                              tiny_corpus_dir: Path) -> None:
    with pytest.raises(UserError, match="other options"):
        run_pipeline(finished_run, _options(tiny_corpus_dir, budget="5e10flops"))


def test_plan_bigger_run_from_exploration(finished_run: Path) -> None:
    from lmalloc.plan.planner import plan_from_run

    small = json.loads((finished_run / "plan.json").read_text())
    big = plan_from_run(finished_run, "2xcpu:1h", out=finished_run / "big.json")
    assert Path(big["path"]) == finished_run / "big.json" and Path(big["path"]).exists()
    assert big["predicted"]["flops"] > 10 * small["predicted"]["flops"]
    assert big["parallelism"]["devices"] == 2
    assert big["predicted"]["seconds"] <= 3600
    assert [r["N_factor"] for r in big["allocation"]["sensitivity"]] == [0.5, 1.0, 2.0]


def test_budget_too_small_is_a_clear_error(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from lmalloc.cli import main; main()", "run",
         "--run", str(tmp_path / "r"), "--data", str(tiny_corpus_dir), "--budget", "1e6flops",
         "--hardware", "cpu", "--vocab-size", "384"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "budget" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_work(tiny_corpus_dir: Path, tmp_path: Path) -> None:
    """SIGKILL in the ladder; the rerun keeps the finished ladder runs and completes."""
    root = tmp_path / "r"
    code = (
        "import sys; from pathlib import Path; "
        "from lmalloc.run import run_pipeline; "
        "sys.path.insert(0, sys.argv[1]); import test_run_pipeline as t; "
        "run_pipeline(sys.argv[2], t._options(Path(sys.argv[3])))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(root),
                             str(tiny_corpus_dir)], env=env)
    first = root / "ladder" / "0" / "stable" / "result.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), "the ladder never finished its first run"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    mtime = first.stat().st_mtime_ns
    summary = run_pipeline(root, _options(tiny_corpus_dir))
    assert first.stat().st_mtime_ns == mtime  # not trained again
    assert summary["achieved"]["status"] == "completed"
    ledger = RunDir(root).manifest()["ledger"]
    stable0 = [r for r in ledger if r.get("size") == 0 and r.get("part") == "stable"
               and r["flops"] > 0]
    assert len(stable0) == 1  # charged once

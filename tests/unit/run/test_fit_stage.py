"""The fit stage on a degenerate ladder table: laws.json carries the remedy (with its prior),
the backtests and why there are no hyperparameter laws; the search trains with WSD."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lmalloc.layout import LADDER_CSV, LADDER_JSON, LAWS_JSON, SEARCH_JSON
from lmalloc.plan.ladder import Ladder
from lmalloc.plan.recipe import Recipe
from lmalloc.run import stages
from lmalloc.run.context import RunContext, RunOptions
from lmalloc.rundir import RunDir
from lmalloc.scaling import load_laws

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scaling"))
from test_degeneracy import C_TOP, _ladder_table  # noqa: E402  (the engineered table)


def _degenerate_ladder_run(root: Path) -> RunDir:
    """A run folder with the engineered degenerate ladder table and its design."""
    run = RunDir(root)
    run.root.mkdir(parents=True)
    with open(run.path(LADDER_CSV), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "D", "loss"])
        w.writerows(zip(*_ladder_table(), strict=True))
    lad = Ladder(runs=(), top_flops=C_TOP, total_cost=0.0, sd_log_n_opt=0.1, sd_log_loss=0.1,
                 target_flops=10 * C_TOP)
    run.path(LADDER_JSON).write_text(json.dumps(lad.to_dict()))
    return run


def test_fit_stage_writes_the_remedy_backtest_and_hp_verdict(tmp_path: Path) -> None:
    ctx = RunContext(tmp_path / "r", RunOptions(hardware="cpu", bootstrap=5))
    run = _degenerate_ladder_run(tmp_path / "r")
    run.path(SEARCH_JSON).write_text(json.dumps(
        {"best_params": {"lr": 0.01}, "proxy": {"d_model": 64}, "trials": []}))
    stages.fit(ctx)
    laws = load_laws(run.path(LAWS_JSON))
    assert laws["degeneracy"]["remedy"] == "map" and laws["parametric"].prior is not None
    assert laws["backtest"]["available"] and laws["backtest"]["of"] == 3
    assert laws["hyperparameters"]["available"] is False
    assert any("remedy: refitted as a MAP fit" in w for w in laws["warnings"])
    rec = run.manifest()["stages"]["fit"]
    assert rec["remedy"] == "map" and rec["backtest_error"] is not None
    ex = laws["extrapolation"]  # the backtest in compute, which the plan's interval carries
    assert ex["available"] and rec["extrapolation_error"] == pytest.approx(ex["mean_error"])
    N, D, _ = _ladder_table()
    assert ex["c_top"] == pytest.approx(max(6 * n * d for n, d in zip(N, D, strict=True)),
                                        rel=0.05)


def test_the_fit_stage_fits_the_lr_law_from_the_two_search_horizons(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    import numpy as np

    monkeypatch.setattr(RunContext, "tokens_per_byte", property(lambda self: 0.25))
    ctx = RunContext(tmp_path / "r", RunOptions(hardware="cpu", bootstrap=20))
    run = _degenerate_ladder_run(tmp_path / "r")
    rng = np.random.default_rng(0)

    def trials(tokens: int, n: int) -> list[dict[str, object]]:
        best = 0.05 * tokens ** -0.3
        lrs = best * np.exp(rng.uniform(-2, 2, n))
        bpb = (4.0 + 0.1 * np.log(lrs / best) ** 2) * 0.25 / math.log(2)  # nats -> bpb
        return [{"state": "complete", "tokens": tokens, "value": float(v),
                 "params": {"lr": float(lr), "warmup": 0.05}}
                for lr, v in zip(lrs, bpb, strict=True)]

    run.path(SEARCH_JSON).write_text(json.dumps(
        {"best_params": {"lr": 0.01}, "proxy": {"d_model": 64}, "trials": trials(400_000, 16),
         "horizon": {"trial_tokens": 100_000, "trials": trials(100_000, 16)}}))
    stages.fit(ctx)
    hp = load_laws(run.path(LAWS_JSON))["hyperparameters"]
    assert hp.scale == "D" and hp.lr is not None
    assert hp.lr.p == pytest.approx(-0.3, abs=0.05)
    assert sorted(s for s, _, _ in hp.lr.optima) == pytest.approx([1e5, 4e5])


def _search_stage_calls(root: Path, monkeypatch: pytest.MonkeyPatch, budget: str,
                        share: float) -> tuple[list[dict[str, Any]], RunContext]:
    """Run the search stage with ``run_search_stage`` recorded, not run: one call per study,
    its keyword arguments. The proxy's main trials are 40 batches long."""
    import lmalloc.plan.planner as planner
    import lmalloc.run.explore as explore
    from lmalloc.layout import SPLIT_JSON
    from lmalloc.model.accounting import param_count
    from lmalloc.model.config import GPTConfig
    from lmalloc.plan.ladder import design_ladder

    def flops(cfg: GPTConfig, tokens: float) -> float:
        return 6.0 * param_count(cfg) * tokens

    lad = design_ladder(1e13, flops, 1e14, 512, 128, 1024)
    run = RunDir(root)
    run.root.mkdir(parents=True)
    run.path(SPLIT_JSON).write_text(json.dumps({"search_budget": share,
                                                "ladder": lad.to_dict()}))
    calls: list[dict[str, Any]] = []
    found = {"best_params": {"lr": 0.01}, "trials": [], "counts": {}}
    monkeypatch.setattr(explore, "run_search_stage",
                        lambda run_, proxy, recipe, **kw: calls.append(kw) or dict(found))
    monkeypatch.setattr(planner, "tokens_within", lambda *a, **k: 40 * 2048)
    ctx = RunContext(root, RunOptions(hardware="cpu", budget=budget))
    stages.search(ctx)
    return calls, ctx


def test_the_search_stage_searches_a_second_shorter_horizon_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (horizon, main), ctx = _search_stage_calls(tmp_path / "r", monkeypatch, "1e13flops", 8e11)
    assert horizon["study_name"] == stages.HORIZON_STUDY and main.get("study_name") is None
    assert horizon["pruner"] == "none" and main.get("pruner", "asha") == "asha"
    assert horizon["trial_seconds"] == main["trial_seconds"] == 0.0  # a FLOP budget: unused
    assert main["trial_tokens"] == 40 * 2048
    assert horizon["trial_tokens"] == 10 * 2048  # a quarter, in whole batches
    # the horizon study spends its part first; the main one the stage's whole share after
    assert horizon["budget"] == pytest.approx(stages.HORIZON_SHARE * 8e11)
    assert main["budget"] == pytest.approx(8e11)
    doc = json.loads(ctx.run.path(SEARCH_JSON).read_text())
    assert doc["horizon"]["trial_tokens"] == 10 * 2048 and doc["trial_tokens"] == 40 * 2048


def test_a_time_budgeted_search_starts_no_trial_it_cannot_pay_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmalloc.model.config import GPTConfig

    (horizon, main), ctx = _search_stage_calls(tmp_path / "r", monkeypatch, "10m", 40.0)
    proxy = GPTConfig.from_dict(json.loads(ctx.run.path(SEARCH_JSON).read_text())["proxy"])
    cost = ctx.cost(ctx.recipe.evals_per_run)
    # each study is told what one of its whole trials is predicted to take
    assert main["trial_seconds"] == pytest.approx(cost(proxy, 40 * 2048))
    assert horizon["trial_seconds"] == pytest.approx(cost(proxy, 10 * 2048))
    assert 0 < horizon["trial_seconds"] < main["trial_seconds"]


def test_a_second_study_keeps_its_trials_apart() -> None:
    run = RunDir("/tmp/r")
    assert run.trial(3) == run.root / "trials" / "3"
    assert run.trial(3, "horizon") == run.root / "trials" / "horizon-3"


def test_the_search_trains_with_the_final_runs_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmalloc.search.study as study
    from lmalloc.run.explore import run_search_stage

    seen = {}

    def fake(settings, on_poll=None):  # type: ignore[no-untyped-def]
        seen["train"] = settings.base_train
        return {"best": []}

    monkeypatch.setattr(study, "run_search", fake)
    recipe = Recipe()
    proxy = {"vocab_size": 64, "n_layer": 2, "n_head": 2, "d_model": 32, "seq_len": 128}
    run_search_stage(RunDir(tmp_path / "r"), proxy, recipe, budget=1e12, unit="flops",
                     trial_tokens=8 * recipe.batch_tokens)
    final = recipe.train_config(max_tokens=1).to_dict()
    assert seen["train"]["schedule"] == final["schedule"] == "wsd"
    assert seen["train"]["cooldown_frac"] == final["cooldown_frac"]


def test_seed_repeat_reproduces_the_branch_schedule_with_another_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmalloc.run.explore as explore
    from lmalloc.model.accounting import param_count
    from lmalloc.model.config import GPTConfig
    from lmalloc.plan.ladder import design_ladder

    def flops(cfg: GPTConfig, tokens: float) -> float:
        return 6.0 * param_count(cfg) * tokens

    lad = design_ladder(1e13, flops, 1e14, 512, 128, 1024)
    small = min(lad.runs, key=lambda r: r.N)
    b = min(small.branches, key=lambda x: x.tokens)
    rows = [{"N": small.N, "branch": b.tokens, "loss": 5.0}]
    seen = {}

    def fake(out, model, train, data_dir, charge, **branch):  # type: ignore[no-untyped-def]
        seen.update(train=train, branch=branch)
        return {"val_loss": 5.05}

    monkeypatch.setattr(explore, "_trained", fake)
    recipe = Recipe(seq_len=128, batch_tokens=1024)
    run = RunDir(tmp_path / "r")
    got = explore.run_seed_repeat(run, lad, recipe, 0.01, 0.05, 64, flops, rows)
    assert got == {"N": small.N, "D": b.tokens, "losses": [5.0, 5.05]}
    t = seen["train"]
    assert t.seed == recipe.seed + 1 and t.max_tokens == b.tokens and not seen["branch"]
    assert t.warmup == pytest.approx(0.05 * small.stable_tokens)  # same warmup tokens
    assert t.cooldown_frac == pytest.approx(b.cooldown_tokens / b.tokens)
    assert t.schedule == "wsd" and t.lr == 0.01
    too_little = flops(GPTConfig.from_dict(small.model), b.tokens) / 2
    assert explore.run_seed_repeat(run, lad, recipe, 0.01, 0.05, 64, flops, rows,
                                   allowed=too_little) is None

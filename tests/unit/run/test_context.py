"""The run context: the allowance (one unit, one reserve rule), the search result read from
``search.json``, the time-model calibration, and the recipe's one set of training defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lmalloc.cost.hardware import get_hardware
from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.plan.planner import cost_function
from lmalloc.plan.recipe import Recipe, SearchResult
from lmalloc.run.context import Allowance, RunContext, RunOptions
from lmalloc.rundir import RunDir
from lmalloc.train.config import TrainConfig

RECIPE = Recipe(seq_len=128, batch_tokens=2048, micro_batch=16)


def test_time_scale_calibrates_seconds_from_the_runs_own_trainings(tmp_path: Path) -> None:
    p = RunContext(tmp_path / "r", RunOptions(hardware="cpu", recipe=RECIPE))
    p.allowance = Allowance(p.run, "1h", "seconds", 3600.0, None, None)
    assert p.hardware.name == get_hardware("cpu").name
    assert p.time_scale() == 1.0  # nothing trained yet
    run = RunDir(tmp_path / "r")
    run.charge("ladder", 1e9, 30.0, predicted=10.0)
    run.charge("ladder", 1e9, 30.0, predicted=20.0)
    run.charge("train", 1e9, 500.0)  # no prediction: not part of the ratio
    assert p.time_scale() == pytest.approx(2.0)
    cfg = GPTConfig(vocab_size=4096, n_layer=2, n_head=2, d_model=64, seq_len=128)
    base = cost_function("seconds", p.hardware, RECIPE)(cfg, 1e6)
    assert p.cost()(cfg, 1e6) == pytest.approx(2.0 * base)
    p.allowance = Allowance(p.run, "1e15flops", "flops", 1e15, None, None)
    assert p.time_scale() == 1.0  # compute budgets are counted, not predicted


def test_allowance_reserve_and_the_final_share(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    seconds = Allowance(run, "10m", "seconds", 600.0, None, None)
    assert seconds.reserve() == pytest.approx(18.0)  # 3 % of 10 minutes (at most 30 s)
    assert Allowance(run, "10m", "seconds", 600.0, None, 2e6).reserve() == pytest.approx(48.0)
    assert Allowance(run, "1e15flops", "flops", 1e15, None, 2e6).reserve() == 0.0
    run.charge("search", 1e9, 100.0)
    assert seconds.left() == pytest.approx(500.0)
    assert seconds.for_final() == (pytest.approx(482.0), None)
    assert seconds.for_final(promised=490.0) == (pytest.approx(482.0), None)  # within 5 %
    run.charge("ladder", 1e9, 490.0)
    with pytest.raises(UserError, match="was spent before the final run"):
        seconds.for_final()


def test_an_overspent_exploration_still_leaves_the_final_run_a_floor(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    a = Allowance(run, "10m", "seconds", 600.0, None, None)
    run.charge("search", 1e9, 100.0)
    run.charge("ladder", 1e9, 300.0)  # the split promised the final run 400 s
    amount, note = a.for_final(promised=400.0 - a.reserve())
    assert amount == pytest.approx(200.0 - 18.0)  # what is left, less the reserve
    assert note is not None and not note["over_total"]
    assert note["spent_by_stage"]["ladder"] == 300.0 and "leaving 182" in note["why"]
    run.charge("ladder", 1e9, 190.0)  # 10 s left: below the reserve
    amount, note = a.for_final(promised=382.0)
    assert amount == pytest.approx(0.25 * 382.0)  # the floor, past the total
    assert note is not None and note["over_total"] and "past the total budget" in note["why"]


def test_the_allowance_unit_is_compute_when_given(tmp_path: Path) -> None:
    ctx = RunContext(tmp_path / "r", RunOptions(hardware="cpu", budget="10m,1e12flops"))
    assert (ctx.allowance.unit, ctx.allowance.total) == ("flops", 1e12)
    ctx = RunContext(tmp_path / "s", RunOptions(hardware="cpu", budget="mem=1GB"))
    with pytest.raises(UserError, match="neither time nor compute"):
        _ = ctx.allowance


def test_search_result_reads_search_json_once_with_the_recipe_warmup(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"best_params": {"lr": 0.02}, "proxy": {"d_model": 48},
                                "trials": [{"tokens": 1, "seconds": 2}]}))
    found = SearchResult.load(path, RECIPE)
    assert (found.lr, found.warmup, found.base_width) == (0.02, RECIPE.warmup, 48)
    assert found.trials == [{"tokens": 1, "seconds": 2}]
    assert found.base_depth is None  # a search from before depth transfer: width-only μP
    path.write_text(json.dumps({"best_params": {"lr": 0.02},
                                "proxy": {"d_model": 48, "mup_base_depth": 2}}))
    assert SearchResult.load(path, RECIPE).base_depth == 2


def test_the_recipe_shares_the_train_configs_defaults() -> None:
    """Only what an exploration deliberately changes differs from ``TrainConfig``."""
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    recipe = Recipe()
    same = {"seq_len", "warmup", "weight_decay", "min_lr_ratio", "cooldown_frac", "seed"}
    assert {k: getattr(recipe, k) for k in same} == {k: train[k] for k in same}
    cfg = recipe.train_config(max_tokens=4096)
    assert isinstance(cfg, TrainConfig)
    assert (cfg.lr, cfg.batch_tokens, cfg.schedule, cfg.max_tokens) == (1e-2, 2048, "wsd", 4096)


def test_time_scale_predicts_each_search_trial_as_it_ran(tmp_path: Path) -> None:
    """A pruned trial paid for its training and its short interim evaluations only, a finished
    one for its closing full evaluation too, a trial without a pruner for that one alone:
    predicted so, trials that each ran 1.2x their prediction give a scale of 1.2."""
    from lmalloc.plan.planner import eval_seconds
    from lmalloc.run.explore import INTERIM_EVAL_TOKENS

    p = RunContext(tmp_path / "r", RunOptions(hardware="cpu", recipe=RECIPE))
    p.allowance = Allowance(p.run, "1h", "seconds", 3600.0, None, None)
    proxy = GPTConfig(vocab_size=4096, n_layer=3, n_head=4, d_model=64, seq_len=128)
    train = cost_function("seconds", p.hardware, RECIPE, evals=0)
    ev = eval_seconds(p.hardware, RECIPE)
    interim = ev(proxy, INTERIM_EVAL_TOKENS)
    full = ev(proxy, RECIPE.eval_tokens)
    assert 0 < interim < full
    # 30-step trials evaluated every 7 steps; a 7-step horizon trial evaluated at its end
    truth = [("pruned", 14336, train(proxy, 14336) + interim),
             ("complete", 61440, train(proxy, 61440) + 4 * interim + full),
             ("pruned", 57344, train(proxy, 57344) + 4 * interim)]
    main = [{"state": s, "tokens": n, "seconds": 1.2 * t} for s, n, t in truth]
    horizon = [{"state": "complete", "tokens": 14336,
                "seconds": 1.2 * (train(proxy, 14336) + full)}]
    doc = {"best_params": {"lr": 1e-2}, "proxy": proxy.to_dict(), "trials": main,
           "eval_every": 7, "horizon": {"trials": horizon, "eval_every": 0}}
    p.run.root.mkdir(parents=True)
    p.run.path("search.json").write_text(json.dumps(doc))
    assert p.time_scale() == pytest.approx(1.2)
    # what a whole trial's evaluations would have predicted for each: a scale far from 1.2
    whole = cost_function("seconds", p.hardware, RECIPE, evals=RECIPE.evals_per_run)
    naive = sum(t["seconds"] for t in main + horizon) / sum(
        whole(proxy, t["tokens"]) for t in main + horizon)
    assert abs(naive - 1.2) > 0.1

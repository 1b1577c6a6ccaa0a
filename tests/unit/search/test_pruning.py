"""Pruners: ``make_pruner``'s settings, and the Pareto rung rule of multi-objective studies
(unit level, driven through the objective's trainer callback on a real Optuna study)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from lmalloc.errors import UserError
from lmalloc.search.halving import TieTolerantHalving
from lmalloc.search.objective import _ReportToPruner
from lmalloc.search.pareto_prune import (
    COST_ATTR,
    RUNG_ATTR,
    dominates,
    hypervolume_2d,
    pareto_front,
    rung_tokens,
    should_prune,
)
from lmalloc.search.study import make_pruner
from lmalloc.train.callbacks import StopTraining

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_make_pruner_uses_tokens_as_the_resource() -> None:
    asha = make_pruner("asha", 9000)
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner)
    assert asha._reduction_factor == 3
    hb = make_pruner("hyperband", 9000)
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (1000, 9000, 3)
    assert make_pruner("hyperband", None)._max_resource == "auto"
    assert isinstance(make_pruner("median", 9000), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("none", 9000), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("asha-ties", 9000), TieTolerantHalving)
    with pytest.raises(UserError, match="asha, asha-ties, hyperband"):
        make_pruner("sha", 9000)


def _run_flat(study: optuna.Study, value: float, steps: int = 100) -> TrialState:
    """One trial reporting ``value`` at every step 1..steps; pruned or completed."""
    trial = study.ask()
    for step in range(1, steps + 1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
    study.tell(trial, value)
    return TrialState.COMPLETE


@pytest.mark.parametrize("maximize", [False, True])
def test_asha_ties_spares_a_trial_within_the_tolerance_and_stops_a_worse_one(
        maximize: bool) -> None:
    """Rungs at steps 1, 3, 9, 27, 81 (ASHA's automatic minimum resource: the first
    completed trial's 100 steps / 100), two trials at 1.0 on each. A trial 0.2 % off the
    cut-off is stopped by ASHA at the first rung but finishes under asha-ties (it ties at
    every rung); 20 % off, both stop it."""
    sign = -1.0 if maximize else 1.0
    outcome = {}
    for name in ("asha", "asha-ties"):
        study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                    pruner=make_pruner(name, None))
        # the first sets the rungs; the next two record 1.0 at each of them
        assert {_run_flat(study, sign * 1.0) for _ in range(3)} == {TrialState.COMPLETE}
        outcome[name] = [_run_flat(study, sign * v) for v in (1.002, 1.2)]
    assert outcome["asha"] == [TrialState.PRUNED, TrialState.PRUNED]
    assert outcome["asha-ties"] == [TrialState.COMPLETE, TrialState.PRUNED]


def test_tie_is_measured_from_the_rungs_promotion_cut_off() -> None:
    p = TieTolerantHalving(reduction_factor=3, tolerance=0.005)
    rung = [1.0, 1.001, 1.002, 1.5, 1.6, 1.7]  # 6 // 3 = 2 promoted: the cut-off is 1.001
    assert p.is_tie(1.005, rung + [1.005], optuna.study.StudyDirection.MINIMIZE)
    assert not p.is_tie(1.01, rung + [1.01], optuna.study.StudyDirection.MINIMIZE)
    up = [-v for v in rung]
    assert p.is_tie(-1.005, up + [-1.005], optuna.study.StudyDirection.MAXIMIZE)
    assert not p.is_tie(-1.01, up + [-1.01], optuna.study.StudyDirection.MAXIMIZE)
    with pytest.raises(ValueError, match="tolerance"):
        TieTolerantHalving(tolerance=-0.1)


def test_rule_is_asha_when_costs_are_equal_and_spares_the_front() -> None:
    assert rung_tokens(2700) == [100, 300, 900]
    assert dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1))
    # too few trials at the rung: nobody is judged
    assert not should_prune((9.0, 1.0), [(1.0, 1.0), (2.0, 1.0)])
    # equal costs, 6 trials: pruned when >= 6 // 3 = 2 are better (ASHA's top third)
    peers = [(1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0), (5.0, 1.0)]
    assert not should_prune((1.5, 1.0), peers)  # one better: in the top third
    assert should_prune((2.5, 1.0), peers)
    # the worst loss but the cheapest: on the rung's front, never pruned
    assert not should_prune((9.0, 0.1), peers)
    assert pareto_front([(1, 3), (2, 1), (2, 3), (3, 0.5)]) == [0, 1, 3]
    assert hypervolume_2d([(1, 3), (2, 1)], (4, 4)) == pytest.approx(7.0)
    assert hypervolume_2d([(5, 1)], (4, 4)) == 0.0


def test_pareto_pruning_never_prunes_a_trial_that_ends_on_the_front() -> None:
    """Planted: 60 trials, loss(t) = q + 2 / sqrt(t / 1000) keeps every trial's rank at every
    fidelity, cost known up front. The callback runs each trial's 8 evaluations in a real
    two-objective study; trials on the final front of all 60 (true, full-fidelity) points
    must all complete, and the rule must prune a good share of the others."""
    rng = np.random.default_rng(0)
    n, max_tokens = 60, 8000
    q, cost = rng.uniform(1.0, 3.0, n), rng.uniform(1.0, 10.0, n)
    # a planted tradeoff: cheaper models are worse (plus spread), as size against loss
    q = q + 2.0 / cost
    study = optuna.create_study(directions=["minimize", "minimize"])
    pruned = []
    for i in range(n):
        trial = study.ask()
        trial.set_user_attr(COST_ATTR, float(cost[i]))
        cb = _ReportToPruner(trial, "val_bpb", pareto=True, cost=float(cost[i]),
                             max_tokens=max_tokens)
        try:
            for tokens in range(1000, max_tokens + 1, 1000):
                cb.on_eval(None, {"val_bpb": q[i] + 2.0 / np.sqrt(tokens / 1000),
                                  "tokens": tokens})
        except StopTraining:
            study.tell(trial, state=TrialState.PRUNED)
            pruned.append(i)
            continue
        study.tell(trial, [q[i] + 2.0 / np.sqrt(8), float(cost[i])])
    front = set(pareto_front(list(zip(q, cost, strict=True))))
    assert front and not front & set(pruned)
    assert len(pruned) >= n // 3, len(pruned)
    # every trial recorded its loss at the rungs it reached, for the others to compare with
    assert all(RUNG_ATTR in t.user_attrs for t in study.trials)


def test_single_objective_reports_to_optuna_and_pareto_off_never_prunes() -> None:
    single = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=0))
    for value in (1.0, 5.0):
        trial = single.ask()
        cb = _ReportToPruner(trial, "val_bpb")
        try:
            cb.on_eval(None, {"val_bpb": value, "tokens": 100})
            single.tell(trial, value)
        except StopTraining:
            single.tell(trial, state=TrialState.PRUNED)
    assert [t.state for t in single.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    pareto = optuna.create_study(directions=["minimize", "minimize"])
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        trial = pareto.ask()
        cb = _ReportToPruner(trial, "val_bpb", pareto=False, cost=1.0, max_tokens=900)
        for tokens in (100, 300, 900):
            cb.on_eval(None, {"val_bpb": value, "tokens": tokens})
        pareto.tell(trial, [value, 1.0])
    assert all(t.state == TrialState.COMPLETE for t in pareto.trials)


def test_a_second_evaluation_at_a_reported_step_is_not_reported_again() -> None:
    """The closing evaluation lands on the last interim step: Optuna would ignore it and warn."""
    import warnings

    study = optuna.create_study()
    trial = study.ask()
    cb = _ReportToPruner(trial, "val_bpb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "already reported" UserWarning fails here
        cb.on_eval(None, {"val_bpb": 2.0, "tokens": 100})
        cb.on_eval(None, {"val_bpb": 1.9, "tokens": 100})
    assert study.trials[0].intermediate_values == {100: 2.0}

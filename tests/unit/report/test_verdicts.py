"""The verdicts at the top of the report, from engineered artifacts (nothing is trained): a
degenerate fit, a thin search, a missed interval, an overspent budget, repeated data, and a
healthy run that gets nothing but ``ok``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lmalloc.report.verdicts import (
    MIN_IMPORTANCE_TRIALS,
    OK,
    PROBLEM,
    WARNING,
    Verdict,
    judge,
)

PROBLEMS = [{"code": "exponent", "message": "alpha = 10 is outside [0.02, 2.0]: the ladder did "
             "not resolve the effect of model size"},
            {"code": "vanished", "message": "the model size term (A) is below 0.001 of the "
             "loss at every run: the fit sees no effect of it"}]
PRIOR = {"mean": {"alpha": 0.34, "beta": 0.28}, "sd": 0.15, "noise": 0.01,
         "source": "Hoffmann et al. 2022 (Chinchilla) exponents"}


def _iv(v: float, spread: float = 1.1) -> dict[str, float]:
    return {"value": v, "low": v / spread, "high": v * spread, "level": 0.9}


def healthy() -> dict[str, Any]:
    """The artifacts of a run with nothing to say against it."""
    params = {"E": 1.8, "A": 40.0, "B": 90.0, "alpha": 0.34, "beta": 0.28}
    laws = {"parametric": {"kind": "parametric", "params": params, "n_points": 16,
                           "intervals": {k: _iv(v) for k, v in params.items()},
                           "input_range": {"N": [5e4, 8e5], "D": [1e5, 1e7]}},
            "degeneracy": {"degenerate": False, "problems": [], "remedy": None, "prior": None,
                           "plain_params": params},
            "backtest": {"available": True, "held_out_N": 8e5, "inside": 3, "of": 3,
                         "mean_abs_error": 0.006}}
    search = {"counts": {"complete": 22, "pruned": 20},
              "trials": [{"state": "complete"}] * 22 + [{"state": "pruned"}] * 20}
    plan = {"predicted": {"N": 2e5, "D": 4e6, "loss": {"value": 3.5, "low": 3.4, "high": 3.6,
                                                       "level": 0.9}},
            "allocation": {"sensitivity": [{"N_factor": 0.5, "delta_loss": 0.03},
                                           {"N_factor": 2.0, "delta_loss": 0.02}]},
            "data": {"tokens": 4e6, "unique_tokens": 9e6, "epochs": 4e6 / 9e6,
                     "effective_tokens": 4e6}}
    summary = {"budget": {"unit": "seconds", "total": 900.0},
               "shares": {"search": {"share": 40.0, "spent": 39.0},
                          "ladder": {"share": 60.0, "spent": 61.0},
                          "train": {"share": 780.0, "spent": 770.0}},
               "final_share": None, "ladder_dropped": []}
    train = {"status": "completed", "tokens": 4e6, "val_loss": 3.52}
    evaluation = {"perplexity": {"val": {"loss": 3.47, "tokens": 50_304}}}
    metrics = [{"kind": "train", "loss": 3.45}] * 30 + [{"kind": "eval", "val_loss": 3.52,
                                                          "val_tokens": 16_384}]
    return {"laws": laws, "search": search, "plan": plan, "summary": summary, "train": train,
            "evaluation": evaluation, "final_metrics": metrics}


def _by_topic(verdicts: list[Verdict]) -> dict[str, Verdict]:
    topics = [v.topic for v in verdicts]
    assert len(topics) == len(set(topics)), topics
    return {v.topic: v for v in verdicts}


def test_a_healthy_run_gets_only_ok_verdicts() -> None:
    found = _by_topic(judge(**healthy()))
    assert set(found) == {"fit", "backtest", "plan", "search", "interval", "budget",
                          "final run", "data", "losses"}
    assert {v.severity for v in found.values()} == {OK}, found
    assert "alpha = 0.34" in found["fit"].text and "16 ladder runs" in found["fit"].text
    assert "inside the ladder's sizes" in found["plan"].text
    assert "22 trials of 42 completed (20 pruned)" in found["search"].text
    assert "0.6 %" in found["backtest"].text and "3 of 3 inside" in found["backtest"].text
    assert "at most once" in found["data"].text


def test_degenerate_fit_not_fixed_is_a_problem_naming_the_remedy_and_prior() -> None:
    art = healthy()
    art["laws"]["degeneracy"] = {
        "degenerate": True, "problems": PROBLEMS, "remedy": "map", "prior": PRIOR,
        "degenerate_after": True, "problems_after": PROBLEMS[1:]}
    art["laws"]["parametric"]["params"].update(E=1.9e-9, A=8e-9)
    art["plan"]["predicted"]["N"] = 5e4  # the ladder's smallest size
    verdicts = judge(**art)
    found = _by_topic(verdicts)
    fit = found["fit"]
    assert fit.severity == PROBLEM
    assert "alpha = 10 is outside" in fit.text and "MAP fit" in fit.text
    assert "sd 0.15" in fit.text and "Hoffmann et al. 2022" in fit.text
    assert "did not fix it" in fit.text and "model size term (A)" in fit.text
    assert found["plan"].severity == PROBLEM
    assert "artefact of the degenerate fit" in found["plan"].text
    assert verdicts[0].severity == PROBLEM  # worst first


def test_degenerate_fit_fixed_by_the_prior_is_a_warning() -> None:
    art = healthy()
    art["laws"]["degeneracy"] = {"degenerate": True, "problems": PROBLEMS, "remedy": "map",
                                 "prior": PRIOR, "degenerate_after": False,
                                 "problems_after": []}
    fit = _by_topic(judge(**art))["fit"]
    assert fit.severity == WARNING
    assert "remedy, a MAP fit" in fit.text and "fixed it" in fit.text and "sd 0.15" in fit.text


def test_a_laws_file_without_the_remedy_report_is_diagnosed_itself() -> None:
    art = healthy()
    del art["laws"]["degeneracy"]
    art["laws"]["parametric"]["params"]["alpha"] = 10.0
    art["plan"]["predicted"]["N"] = 5e4
    found = _by_topic(judge(**art))
    assert found["fit"].severity == PROBLEM and "alpha = 10 is outside" in found["fit"].text
    assert found["plan"].severity == PROBLEM and "artefact" in found["plan"].text


def test_unidentified_coefficient_and_vanishing_floor_are_warnings() -> None:
    art = healthy()
    art["laws"]["parametric"]["intervals"]["A"] = {"value": 40.0, "low": 6.2e3 / 1e6,
                                                   "high": 1e43, "level": 0.9}
    art["laws"]["parametric"]["params"]["E"] = 1.9e-9
    fit = _by_topic(judge(**art))["fit"]
    assert fit.severity == WARNING
    assert "A's 90% interval spans" in fit.text and "1e+43" in fit.text
    assert "E = 1.9e-09" in fit.text and "not identified" in fit.text


@pytest.mark.parametrize(("delta", "severity", "words"),
                         [(-0.07, WARNING, "the law would go smaller"),
                          (0.02, OK, "the law prefers it")])
def test_plan_at_the_floor_of_a_sound_fit(delta: float, severity: str, words: str) -> None:
    art = healthy()
    art["plan"]["predicted"]["N"] = 5.2e4
    art["plan"]["allocation"]["sensitivity"][0]["delta_loss"] = delta
    plan = _by_topic(judge(**art))["plan"]
    assert plan.severity == severity and words in plan.text
    assert "N = 52,000" in plan.text and "smallest size (50,000)" in plan.text


@pytest.mark.parametrize(("complete", "started", "severity"),
                         [(2, 33, WARNING), (0, 8, PROBLEM),
                          (MIN_IMPORTANCE_TRIALS, MIN_IMPORTANCE_TRIALS, OK)])
def test_search_counts(complete: int, started: int, severity: str) -> None:
    art = healthy()
    art["search"] = {"trials": [{"state": "complete"}] * complete
                     + [{"state": "pruned"}] * (started - complete - 1)
                     + [{"state": "fail"}] * (started > complete)}
    v = _by_topic(judge(**art))["search"]
    assert v.severity == severity
    assert f"{complete} trial{'s' if complete != 1 else ''} of {started} completed" in v.text
    if severity == WARNING:
        assert "importances need at least 20" in v.text and "1 fail" in v.text


def test_search_counts_from_counts_alone() -> None:
    art = healthy()
    art["search"] = {"counts": {"complete": 2, "pruned": 31}}
    assert "2 trials of 33 completed (31 pruned)" in _by_topic(judge(**art))["search"].text


@pytest.mark.parametrize(("got", "words"),
                         [(3.9, "0.30 above its upper end (worse than predicted)"),
                          (3.1, "0.30 below its lower end (better than predicted)")])
def test_achieved_outside_the_interval_is_a_problem_with_its_direction(got: float,
                                                                        words: str) -> None:
    art = healthy()
    art["train"]["val_loss"] = got
    v = _by_topic(judge(**art))["interval"]
    assert v.severity == PROBLEM and words in v.text and "own validation loss" in v.text
    assert "the law's bootstrap only" in v.text


def test_the_interval_names_its_parts() -> None:
    art = healthy()
    art["plan"]["predicted"]["interval"] = {"parts": {"law": {"below": 0.08, "above": 0.09},
                                                      "seed": {"below": 0.03, "above": 0.03}}}
    v = _by_topic(judge(**art))["interval"]
    assert "its width: law -0.08/+0.09, seed -0.03/+0.03" in v.text and v.severity == OK


def test_the_backtest_in_compute_says_its_error_and_which_way() -> None:
    art = healthy()
    art["laws"]["extrapolation"] = {"available": True, "mean_error": 0.031, "factor": 2.0,
                                    "rms_log_error": 0.04, "c_top": 1e12, "points": []}
    v = _by_topic(judge(**art))["backtest"]
    assert "predicts those 2× further with mean error +3.1 % (pessimistic; rms 4 %)" in v.text
    art["laws"]["extrapolation"]["mean_error"] = -0.02
    assert "(optimistic;" in _by_topic(judge(**art))["backtest"].text


def test_a_final_run_cut_short_is_not_the_predicted_run() -> None:
    art = healthy()
    art["train"].update(status="time_limit", tokens=0.47 * 4e6)
    found = _by_topic(judge(**art))
    assert found["interval"].severity == WARNING and "only 47%" in found["interval"].text
    assert found["final run"].severity == WARNING
    assert "slower than the time model predicted" in found["final run"].text


def test_a_final_run_that_filled_its_time_says_so() -> None:
    art = healthy()
    art["train"].update(status="completed", tokens=1.2 * 4e6)
    v = _by_topic(judge(**art))["interval"]
    assert v.severity == OK and "trained 120% of the planned tokens" in v.text
    art["train"].update(tokens=1.02 * 4e6)  # within 5 %: not worth a word
    assert "planned tokens" not in _by_topic(judge(**art))["interval"].text


def test_budget_overspent_and_final_share_short() -> None:
    art = healthy()
    art["summary"]["shares"]["ladder"]["spent"] = 76.1
    art["summary"]["ladder_dropped"] = ["size 3 (N=1743984)"]
    art["summary"]["final_share"] = {"promised": 780.0, "given": 500.0, "over_total": False,
                                     "why": "the stages before the final run spent 400"}
    found = _by_topic(judge(**art))
    assert found["budget"].severity == WARNING
    assert "ladder spent 76.1 s of its 60.0 s share (+27%)" in found["budget"].text
    assert "search" not in found["budget"].text  # within its share
    assert "dropped size 3 (N=1743984)" in found["budget"].text
    assert found["final run"].severity == WARNING
    assert "got 500.0 s of the 780.0 s promised" in found["final run"].text
    art["summary"]["final_share"]["over_total"] = True
    assert _by_topic(judge(**art))["final run"].severity == PROBLEM


def test_repeated_data_warns_and_memorising_it_is_a_problem() -> None:
    art = healthy()
    art["plan"]["data"] = {"tokens": 21.6e6, "unique_tokens": 3.32e6, "epochs": 6.5,
                           "effective_tokens": 18.7e6}
    art["train"]["tokens"] = 21.6e6
    v = _by_topic(judge(**art))["data"]
    assert v.severity == WARNING and "6.5 passes over 3.32M unique" in v.text
    assert "18.7M effective of 21.6M" in v.text and "beyond about 4 passes" in v.text
    assert "the run trained" not in v.text  # it trained what was planned
    art["train"]["tokens"] = 10.1e6  # stopped at its time limit: 3 passes, not 6.5
    v = _by_topic(judge(**art))["data"]
    assert "the run trained 10.1M tokens, 3 passes" in v.text
    assert "beyond about 4 passes" not in v.text
    art["final_metrics"] = [{"kind": "train", "loss": 2.7}] * 30
    art["train"]["val_loss"] = 3.55  # still inside the interval's neighbourhood
    v = _by_topic(judge(**art))["data"]
    assert v.severity == PROBLEM and "0.85 nats/token above its training loss 2.700" in v.text


def test_the_two_validation_losses_are_named_apart() -> None:
    art = healthy()
    art["train"]["val_loss"], art["evaluation"]["perplexity"]["val"]["loss"] = 6.49, 5.76
    v = _by_topic(judge(**art))["losses"]
    assert "6.490 nats/token is the final run's own validation (its first 16,384 tokens" in v.text
    assert "5.760 is `lmalloc eval` on the whole split (all 50,304 tokens)" in v.text
    assert "-0.730" in v.text


def test_stages_not_run_give_no_verdict() -> None:
    assert judge() == []
    art = healthy()
    only = judge(search=art["search"])
    assert [v.topic for v in only] == ["search"]
    found = _by_topic(judge(laws=art["laws"], search=art["search"]))
    assert set(found) == {"fit", "backtest", "search"}


def test_what_cannot_be_judged_is_left_out() -> None:
    art = healthy()
    art["laws"]["parametric"] = {"kind": "parametric", "law": "compute",
                                 "params": {"E": 1.0, "A": 2.0, "alpha": 0.1}}
    art["plan"]["predicted"]["loss"].update(low=None, high=None)
    found = _by_topic(judge(**art))
    assert "fit" not in found and "plan" not in found and "interval" not in found
    assert "backtest" in found and "losses" in found


def test_inputs_are_not_modified() -> None:
    art = healthy()
    before = copy.deepcopy(art)
    judge(**art)
    assert art == before


@pytest.mark.parametrize(("source", "severity", "words"),
                         [("data: smallest", WARNING, "at every IsoFLOP level"),
                          ("degenerate law", PROBLEM, "an artefact of the degenerate fit")])
def test_plan_at_the_floor_of_a_degenerate_fit(source: str, severity: str, words: str) -> None:
    """Still degenerate after the remedy: the floor is an artefact, unless the ladder's own
    IsoFLOP levels put the lowest loss at the smallest size every time (then it is what the
    measurements prefer, and the verdict says so instead)."""
    art = healthy()
    art["laws"]["degeneracy"] = {"degenerate": True, "problems": PROBLEMS, "remedy": "map",
                                 "prior": PRIOR, "degenerate_after": True,
                                 "problems_after": PROBLEMS[1:]}
    art["plan"]["predicted"]["N"] = 5.2e4
    art["plan"]["allocation"]["size_source"] = {"source": source, "why": "..."}
    plan = _by_topic(judge(**art))["plan"]
    assert plan.severity == severity and words in plan.text

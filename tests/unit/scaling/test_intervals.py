"""The composed interval names its parts and adds them right; the backtest's bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling.estimate import Estimate
from lmalloc.scaling.intervals import (
    backtest,
    compose_interval,
    extrapolation_backtest,
    extrapolation_part,
    hyperparameter_part,
    law_part,
    seed_noise,
    seed_part,
)


def test_seed_noise_pools_repeats() -> None:
    got = seed_noise([[3.0, 3.0 * math.exp(0.02)], [2.0, 2.0 * math.exp(-0.02)], [5.0]])
    assert got["groups"] == 2 and got["dof"] == 2
    assert got["sd"] == pytest.approx(0.02 / math.sqrt(2))
    assert seed_noise([[3.0]])["sd"] is None


def test_parts_and_composition() -> None:
    est = Estimate(3.0, 2.9, 3.2, 0.9)
    assert law_part(est) == pytest.approx((0.1, 0.2))
    lo, hi = seed_part(3.0, 0.01, 0.9)
    z = 1.6448536269514722
    assert hi == pytest.approx(3.0 * (math.exp(z * 0.01) - 1))
    assert lo < hi  # multiplicative noise: a little more room above
    h = hyperparameter_part(0.05, 0.2, 0.9)
    assert h[0] == 0.0 and h[1] == pytest.approx(0.05 * (z * 0.2) ** 2)
    d = compose_interval(3.0, 0.9, {"law": law_part(est), "seed": (lo, hi),
                                    "hyperparameters": h})
    assert set(d["parts"]) == {"law", "seed", "hyperparameters"}
    assert d["low"] == pytest.approx(3.0 - math.hypot(0.1, lo))
    assert d["high"] == pytest.approx(3.0 + math.sqrt(0.2**2 + hi**2 + h[1] ** 2))
    # wider than the law's alone on both sides, and never narrower than any part
    assert d["low"] < est.low and d["high"] > est.high
    with pytest.raises(UserError):
        compose_interval(3.0, 0.9, {"bad": (-0.1, 0.1)})


class _Law:
    """A fake fit: loss = 2 + 10 / sqrt(N) + 100 / sqrt(D), interval ±1 %; records its data."""

    def __init__(self, N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> None:
        self.seen = (N, D, loss)

    def predict_estimate(self, N: float, D: float) -> Estimate:
        v = 2 + 10 / math.sqrt(N) + 100 / math.sqrt(D)
        return Estimate(v, 0.99 * v, 1.01 * v, 0.9)


def test_backtest_bookkeeping() -> None:
    N = np.repeat([1e4, 4e4, 1.6e5, 6.4e5], 3)
    D = np.tile([1e5, 2e5, 4e5], 4)
    loss = 2 + 10 / np.sqrt(N) + 100 / np.sqrt(D)
    loss[-1] *= 1.05  # one held-out point off by 5 %: outside the ±1 % interval
    fits: list[_Law] = []

    def fit_fn(n: np.ndarray, d: np.ndarray, y: np.ndarray) -> _Law:
        fits.append(_Law(n, d, y))
        return fits[-1]

    bt = backtest(N, D, loss, fit_fn, min_points=8)
    assert bt["available"] and bt["held_out_N"] == 6.4e5 and bt["of"] == 3
    assert 6.4e5 not in fits[0].seen[0] and len(fits[0].seen[0]) == 9  # never saw the largest
    assert [r["inside"] for r in bt["points"]] == [True, True, False]
    assert bt["inside"] == 2
    assert bt["points"][-1]["error"] == pytest.approx(1 / 1.05 - 1)
    assert bt["mean_abs_error"] == pytest.approx(abs(1 / 1.05 - 1) / 3)


def test_backtest_refuses_too_little() -> None:
    N = np.repeat([1e4, 4e4, 1.6e5], 3)
    D = np.tile([1e5, 2e5, 4e5], 3)
    bt = backtest(N, D, np.ones(9), lambda n, d, y: _Law(n, d, y))
    assert not bt["available"] and "4" in bt["reason"]
    N = np.array([1e4, 2e4, 4e4, 8e4])
    bt = backtest(N, np.full(4, 1e5), np.ones(4), lambda n, d, y: _Law(n, d, y))
    assert not bt["available"] and "needs 8" in bt["reason"]


def test_backtest_with_a_real_fit() -> None:
    from lmalloc.scaling.parametric import fit_parametric
    from lmalloc.scaling.simulate import simulate_runs

    runs = simulate_runs(seed=0, sigma=0.005)
    bt = backtest(runs.N, runs.D, runs.loss,
                  lambda n, d, y: fit_parametric(n, d, y, bootstrap=30, seed=0))
    assert bt["available"] and bt["mean_abs_error"] < 0.02


def test_predicted_interval_names_what_it_could_not_measure() -> None:
    from lmalloc.scaling.intervals import predicted_interval

    est = Estimate(3.0, 2.95, 3.06, 0.9)
    only_law = predicted_interval(est)
    assert only_law["low"] == pytest.approx(2.95) and only_law["high"] == pytest.approx(3.06)
    assert only_law["not_measured"] == ["seed", "extrapolation"]
    check = {"available": True, "rms_log_error": 0.02, "factor": 2.0, "c_top": 1e12}
    full = predicted_interval(est, 0.01, [("lr", 0.08, 0.3), ("batch", None, 0.2)],
                              (check, 1e13))
    assert set(full["parts"]) == {"law", "seed", "lr", "extrapolation"}
    assert full["not_measured"] == ["batch"]
    assert full["low"] < est.low and full["high"] > est.high


def test_extrapolation_backtest_holds_out_each_sizes_longest_training() -> None:
    N = np.repeat([1e4, 4e4, 1.6e5, 6.4e5], 3)
    D = np.tile([1e5, 2e5, 4e5], 4)
    loss = 2 + 10 / np.sqrt(N) + 100 / np.sqrt(D)
    loss[D == 4e5] /= 1.03  # the longest trainings 3 % better than the law: it is pessimistic
    fits: list[_Law] = []

    def fit_fn(n: np.ndarray, d: np.ndarray, y: np.ndarray) -> _Law:
        fits.append(_Law(n, d, y))
        return fits[-1]

    ex = extrapolation_backtest(N, D, loss, 6 * N * D, fit_fn, min_points=8)
    assert ex["available"] and len(ex["points"]) == 4
    assert 4e5 not in fits[0].seen[1] and len(fits[0].seen[1]) == 8  # never saw the longest
    assert {r["D"] for r in ex["points"]} == {4e5}
    assert ex["mean_error"] == pytest.approx(0.03)
    assert ex["rms_log_error"] == pytest.approx(math.log(1.03))
    assert ex["factor"] == pytest.approx(2.0) and ex["c_top"] == pytest.approx(6 * 6.4e5 * 4e5)


def test_extrapolation_part_grows_with_the_plans_extrapolation() -> None:
    check = {"rms_log_error": 0.02, "factor": 2.0, "c_top": 1e12}
    z = 1.6448536269514722
    # at or below the ladder's compute: one backtest step; 8x further: three steps
    assert extrapolation_part(4.0, check, 1e11, 0.9) == pytest.approx(seed_part(4.0, 0.02, 0.9))
    lo, hi = extrapolation_part(4.0, check, 8e12, 0.9)
    assert hi == pytest.approx(4.0 * (math.exp(z * 0.06) - 1))
    assert lo == pytest.approx(4.0 * (1 - math.exp(-z * 0.06)))


def test_extrapolation_backtest_refuses_too_little() -> None:
    N = np.array([1e4, 4e4, 1.6e5, 6.4e5])
    ex = extrapolation_backtest(N, np.full(4, 1e5), np.ones(4), N, lambda n, d, y: _Law(n, d, y))
    assert not ex["available"] and "2+ token counts" in ex["reason"]
    N = np.repeat([1e4, 4e4, 1.6e5], 2)
    D = np.tile([1e5, 2e5], 3)
    ex = extrapolation_backtest(N, D, np.ones(6), N * D, lambda n, d, y: _Law(n, d, y))
    assert not ex["available"] and "needs 8" in ex["reason"]

"""Approach 3: recovery of a known law, closed-form optimum, serialisation, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from lmalloc.errors import UserError
from lmalloc.scaling import (
    ExtrapolationWarning,
    ParametricFit,
    compute_optimal,
    fit_parametric,
    load_laws,
    save_laws,
)
from lmalloc.scaling.simulate import CHINCHILLA, chinchilla_loss, simulate_runs, true_optimum


@pytest.fixture(scope="module")
def fit() -> ParametricFit:
    runs = simulate_runs(seed=0)
    return fit_parametric(runs.N, runs.D, runs.loss, bootstrap=60, seed=0)


def test_recovers_parameters_inside_intervals(fit: ParametricFit) -> None:
    est = fit.estimates()
    for name, truth in CHINCHILLA.items():
        assert est[name].contains(truth), (name, est[name], truth)
    assert abs(fit.params["alpha"] - 0.34) < 0.05 and abs(fit.params["beta"] - 0.28) < 0.05
    assert fit.converged and fit.bootstrap_failed == 0 and fit.samples.shape == (60, 5)


def test_noiseless_fit_is_exact() -> None:
    runs = simulate_runs(seed=0, sigma=0.0)
    f = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=0)
    for name, truth in CHINCHILLA.items():
        assert f.params[name] == pytest.approx(truth, rel=2e-3), name


def test_prediction_interval_contains_truth_in_range(fit: ParametricFit) -> None:
    N, D = np.array([3e7, 1e8, 3e8]), np.array([3e9, 1e9, 1e10])
    lo, hi = fit.interval(N, D)
    truth = chinchilla_loss(N, D)
    assert np.all(lo <= truth) and np.all(truth <= hi)
    assert np.all(lo <= fit.predict(N, D)) and np.all(fit.predict(N, D) <= hi)


def test_compute_optimal_matches_numeric_minimum(fit: ParametricFit) -> None:
    C = 1e21
    opt = compute_optimal(fit, C)
    p = fit.params

    def loss_along(logN: float) -> float:
        N = np.exp(logN)
        return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / (C / (6 * N)) ** p["beta"]

    res = minimize_scalar(
        loss_along, bounds=(np.log(1e6), np.log(1e13)), method="bounded", options={"xatol": 1e-10}
    )
    assert opt.N.value == pytest.approx(np.exp(res.x), rel=1e-4)
    assert opt.N.value * opt.D.value * 6 == pytest.approx(C, rel=1e-9)
    assert opt.loss.value == pytest.approx(res.fun, rel=1e-9)
    n_true, _ = true_optimum(C)
    assert opt.N.contains(n_true)


def test_flops_factor_changes_allocation(fit: ParametricFit) -> None:
    a6 = compute_optimal(fit, 1e21)
    a8 = compute_optimal(fit, 1e21, flops_per_token_per_param=8.0)
    assert a8.N.value * a8.D.value * 8 == pytest.approx(1e21)
    assert a8.N.value < a6.N.value


def test_extrapolation_warns_with_factor(fit: ParametricFit) -> None:
    with pytest.warns(ExtrapolationWarning, match=r"3\.33e\+04x beyond"):
        compute_optimal(fit, 1e24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_optimal(fit, 1e21)  # 33x: inside the sensible range, no warning


def test_round_trip_through_laws_json(fit: ParametricFit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    save_laws(tmp_path / "laws.json", {"parametric": fit})
    back = load_laws(tmp_path / "laws.json")["parametric"]
    assert isinstance(back, ParametricFit)
    assert back.params == fit.params and back.param_convention == "total"
    np.testing.assert_array_equal(back.samples, fit.samples)
    assert compute_optimal(back, 1e21) == compute_optimal(fit, 1e21)


def test_compute_law_single_variable() -> None:
    rng = np.random.default_rng(0)
    C = np.logspace(17, 21, 12)
    loss = (1.8 + 60.0 * C**-0.1) * np.exp(0.005 * rng.standard_normal(C.size))
    f = fit_parametric(C=C, loss=loss, law="compute", bootstrap=40)
    assert f.param("alpha").contains(0.1) and abs(f.params["alpha"] - 0.1) < 0.03
    assert f.predict(1e22).shape == ()
    with pytest.raises(UserError, match="L\\(N, D\\)"):
        compute_optimal(f, 1e22)


def test_too_few_points_says_how_many_more() -> None:
    runs = simulate_runs(seed=0)
    with pytest.raises(UserError, match="needs at least 8 distinct runs; got 5: add 3 more"):
        fit_parametric(runs.N[:5], runs.D[:5], runs.loss[:5], bootstrap=0)


def test_all_n_equal_cannot_fit_alpha() -> None:
    D = np.logspace(8, 11, 10)
    with pytest.raises(UserError, match="all N values are equal.*cannot fit alpha"):
        fit_parametric(np.full(10, 1e8), D, chinchilla_loss(np.full(10, 1e8), D), bootstrap=0)


def test_bad_values_and_options() -> None:
    runs = simulate_runs(seed=0)
    loss = runs.loss.copy()
    loss[3] = -1.0
    with pytest.raises(UserError, match="loss must be positive"):
        fit_parametric(runs.N, runs.D, loss)
    with pytest.raises(UserError, match="param_convention"):
        fit_parametric(runs.N, runs.D, runs.loss, param_convention="embedding")
    with pytest.raises(UserError, match="level"):
        fit_parametric(runs.N, runs.D, runs.loss, level=90)

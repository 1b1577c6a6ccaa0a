"""Approach 2: grouping, parabola minima, exponent recovery, bad designs."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling import IsoFLOPFit, fit_isoflop, group_levels
from lmalloc.scaling.isoflop import parabola_minima
from lmalloc.scaling.simulate import simulate_runs, true_optimum

A_TRUE = 0.28 / (0.34 + 0.28)  # beta / (alpha + beta)


def test_group_levels_tolerates_rounding() -> None:
    C = np.array([1e18, 1.1e18, 3e18, 2.9e18, 1e19, 0.95e18])
    assert group_levels(C).tolist() == [0, 0, 1, 1, 2, 0]
    assert group_levels(C, tol_decades=1.0).tolist() == [0] * 6


def test_parabola_minimum_exact_and_batched() -> None:
    x = np.linspace(-2, 2, 7)
    y = 3.0 + 0.5 * (x - 0.3) ** 2
    W = np.vstack([np.ones(7), [0, 0, 0, 0, 0, 3, 2.0], [1, 0, 0, 0, 0, 0, 1.0]])
    xmin, c2 = parabola_minima(x, y, W)
    assert xmin[0] == pytest.approx(0.3) and c2[0] == pytest.approx(0.5)
    assert np.isnan(xmin[1]) and np.isnan(xmin[2])  # < 3 distinct sizes carry weight
    xmin, _ = parabola_minima(x, -y, np.ones((1, 7)))
    assert np.isnan(xmin[0])  # opens downward: no minimum


def test_recovers_exponent_within_interval() -> None:
    runs = simulate_runs(seed=0)
    fit = fit_isoflop(runs.N, runs.loss, C=runs.C, bootstrap=200, seed=0)
    est = fit.estimates()
    assert est["a"].contains(A_TRUE), est["a"]
    assert fit.a + fit.b == pytest.approx(1.0)  # D* = C / (6 N*) on every level
    for lv in fit.levels:
        assert lv.inside and lv.N_opt == pytest.approx(true_optimum(lv.C)[0], rel=0.15)
    N, D = fit.allocate(1e20)
    assert N.low < N.value < N.high and D.value * N.value * 6 == pytest.approx(1e20)


def test_from_d_equals_from_c_and_round_trips() -> None:
    runs = simulate_runs(seed=1)
    a = fit_isoflop(runs.N, runs.loss, C=runs.C, bootstrap=20)
    b = fit_isoflop(runs.N, runs.loss, D=runs.D, bootstrap=20)
    assert a.a == pytest.approx(b.a)
    back = IsoFLOPFit.from_dict(a.to_dict())
    assert back.estimates() == a.estimates() and back.levels == a.levels


def test_too_few_levels_names_what_is_missing() -> None:
    runs = simulate_runs(seed=0, levels=(1e18, 1e19, 1e20))
    keep = np.r_[0:9, 9:18, 18:20]  # the third level keeps only 2 sizes
    with pytest.raises(UserError) as e:
        fit_isoflop(runs.N[keep], runs.loss[keep], C=runs.C[keep], bootstrap=0)
    msg = str(e.value)
    assert "found 2 usable level(s)" in msg and "add 1 more" in msg
    assert "C~1e+20 (2 size(s): needs 1 more)" in msg


def test_short_level_is_skipped_with_warning() -> None:
    runs = simulate_runs(seed=0, levels=(1e17, 1e18, 1e19, 1e20))
    keep = np.r_[0:27, 27:28]
    with pytest.warns(UserWarning, match="skips compute levels"):
        fit = fit_isoflop(runs.N[keep], runs.loss[keep], C=runs.C[keep], bootstrap=10)
    assert len(fit.levels) == 3


def test_level_without_minimum_is_refused() -> None:
    runs = simulate_runs(seed=0)
    loss = runs.loss.copy()
    loss[:9] = np.linspace(4.0, 3.0, 9)  # monotone on the first level
    with pytest.raises(UserError, match="has no minimum"):
        fit_isoflop(runs.N, loss, C=runs.C, bootstrap=0)

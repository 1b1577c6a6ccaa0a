"""Log-log power laws recover known exponents."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.scaling import fit_power_law


def test_power_law_recovery_and_t_interval() -> None:
    rng = np.random.default_rng(0)
    x = np.logspace(17, 21, 8)
    y = 0.3 * x**-0.12 * np.exp(0.03 * rng.standard_normal(8))
    fit = fit_power_law(x, y)
    est = fit.estimates()
    assert est["p"].contains(-0.12) and abs(fit.p + 0.12) < 0.02
    lo, hi = fit.interval(1e19)
    assert lo < 0.3 * 1e19**-0.12 < hi
    noiseless = fit_power_law(x, 0.3 * x**-0.12)
    assert noiseless.p == pytest.approx(-0.12) and noiseless.k == pytest.approx(0.3)


def test_power_law_t_interval_coverage() -> None:
    rng = np.random.default_rng(1)
    x = np.logspace(17, 21, 5)
    hits = sum(
        fit_power_law(x, 2.0 * x**0.3 * np.exp(0.1 * rng.standard_normal(5)))
        .estimates()["p"]
        .contains(0.3)
        for _ in range(400)
    )
    assert 0.85 <= hits / 400 <= 0.95  # nominal 0.9; exact under Gaussian noise

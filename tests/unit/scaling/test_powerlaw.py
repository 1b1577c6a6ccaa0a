"""Log-log power laws and hyperparameter laws recover known exponents."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling import HyperparameterLaws, fit_hyperparameter_laws, fit_power_law


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


def _trials(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A sweep over lr and batch at 5 scales; loss is a bowl around lr* = 2 C^-0.15."""
    scales = np.logspace(17, 21, 5)
    lrs = 2.0 ** np.arange(-14, -4, 0.25)
    batches = 2.0 ** np.arange(4, 12)
    C, lr, bs = (a.ravel() for a in np.meshgrid(scales, lrs, batches, indexing="ij"))
    lr_star, bs_star = 2.0 * C**-0.15, 0.05 * C**0.2
    loss = 2.0 + 0.1 * np.log(lr / lr_star) ** 2 + 0.05 * np.log(bs / bs_star) ** 2
    loss += 0.003 * rng.standard_normal(loss.size)  # trial noise: the best pick scatters
    return C * np.exp(0.01 * rng.standard_normal(C.size)), lr, bs, loss


def test_hyperparameter_laws_recover_exponents() -> None:
    C, lr, bs, loss = _trials(np.random.default_rng(0))
    laws = fit_hyperparameter_laws(C, loss, lr=lr, batch=bs)
    assert laws.lr is not None and laws.batch is not None and len(laws.best) == 5
    assert abs(laws.lr.p + 0.15) < 0.02 and laws.lr.estimates()["p"].contains(-0.15)
    assert abs(laws.batch.p - 0.2) < 0.05
    assert HyperparameterLaws.from_dict(laws.to_dict()) == laws


def test_hyperparameter_laws_need_three_scales() -> None:
    with pytest.raises(UserError, match="found 2: add trials at 1 more"):
        fit_hyperparameter_laws([1e18, 1e18, 1e19], [3.0, 2.9, 2.8], lr=[1e-3, 2e-3, 1e-3])
    with pytest.raises(UserError, match="lr column"):
        fit_hyperparameter_laws([1e18, 1e19, 1e20], [3.0, 2.9, 2.8])

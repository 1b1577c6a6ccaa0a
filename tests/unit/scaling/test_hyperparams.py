"""Hyperparameter laws: simulated searches with known exponents are recovered, at 2 scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling import HyperparameterLaws, fit_hyperparameter_laws
from lmalloc.scaling.hyperparams import PUBLISHED, prior_law, published_value, scale_optimum

LR_K, LR_P = 0.5, -0.2
BS_K, BS_P = 0.3, 0.35


def _search(rng: np.random.Generator, scales: list[float], trials: int = 40,
            noise: float = 0.004) -> tuple[np.ndarray, ...]:
    """Random trials in a log box around (but not centred on) each scale's true optimum; the
    loss is a tilted bowl in (ln lr, ln batch) with a cross term, plus trial noise."""
    C = np.repeat(scales, trials)
    lr_star, bs_star = LR_K * C**LR_P, BS_K * C**BS_P
    lr = lr_star * np.exp(rng.uniform(-1.5, 2.5, C.size))
    bs = bs_star * np.exp(rng.uniform(-2.0, 1.5, C.size))
    u, v = np.log(lr / lr_star), np.log(bs / bs_star)
    loss = 10.0 * C**-0.05 + 0.08 * u**2 + 0.04 * v**2 + 0.03 * u * v
    return C, lr, bs, loss + noise * rng.standard_normal(C.size)


@pytest.mark.parametrize("scales", [[1e15, 1e17], [1e14, 1e15, 1e16]])
def test_recovers_known_exponents_with_intervals(scales: list[float]) -> None:
    C, lr, bs, loss = _search(np.random.default_rng(1), scales)
    laws = fit_hyperparameter_laws(C, loss, lr=lr, batch=bs, bootstrap=100, seed=0)
    assert laws.lr is not None and laws.batch is not None
    assert abs(laws.lr.p - LR_P) < 0.03, laws.lr.p
    assert abs(laws.batch.p - BS_P) < 0.03, laws.batch.p
    assert laws.lr.estimates()["p"].contains(LR_P)
    assert laws.batch.estimates()["p"].contains(BS_P)
    # the prediction one decade beyond the searches is within 15 % and inside its interval
    target = 10 * max(scales)
    for law, k, p in ((laws.lr, LR_K, LR_P), (laws.batch, BS_K, BS_P)):
        est = law.predict_estimate(target)
        assert abs(est.value / (k * target**p) - 1) < 0.15
        assert est.contains(k * target**p)
        assert all(m == "quadratic" for _, _, m in law.optima)
    # the measured bowl curvature (what a mis-set value costs): 0.08 and 0.04 in the truth
    assert laws.lr.curvature == pytest.approx(0.08, rel=0.2)
    assert laws.batch.curvature == pytest.approx(0.04, rel=0.25)
    back = HyperparameterLaws.from_dict(laws.to_dict())
    assert back.lr is not None and back.lr.p == laws.lr.p
    assert back.lr.curvature == laws.lr.curvature
    assert np.array_equal(back.lr.samples, laws.lr.samples)


def test_a_wrong_exponent_is_not_recovered() -> None:
    """The check above can fail: trials whose optimum does not move give p near 0."""
    rng = np.random.default_rng(2)
    C = np.repeat([1e15, 1e17], 40)
    lr = 1e-3 * np.exp(rng.uniform(-2, 2, C.size))
    loss = 3.0 + 0.08 * np.log(lr / 1e-3) ** 2 + 0.004 * rng.standard_normal(C.size)
    laws = fit_hyperparameter_laws(C, loss, lr=lr, bootstrap=50)
    assert laws.lr is not None and abs(laws.lr.p) < 0.03
    assert not laws.lr.estimates()["p"].contains(LR_P)


def test_untrustworthy_bowl_falls_back_to_best_trial() -> None:
    u = np.linspace(-2, 2, 12)[:, None]
    _, method = scale_optimum(u, -u[:, 0] ** 2)  # opens downwards
    assert method == "best trial"
    best, method = scale_optimum(u, (u[:, 0] - 0.3) ** 2)
    assert method == "quadratic" and abs(best[0] - 0.3) < 1e-9


def test_needs_two_scales_and_a_column() -> None:
    with pytest.raises(UserError, match="found 1: add trials at 1 more"):
        fit_hyperparameter_laws([1e18] * 5, [3.0, 2.9, 2.8, 2.9, 3.0], lr=[1e-3] * 5)
    with pytest.raises(UserError, match="lr column"):
        fit_hyperparameter_laws([1e18, 1e19, 1e20], [3.0, 2.9, 2.8])


def test_published_priors_are_named_and_anchored() -> None:
    assert math.isclose(published_value("deepseek", "lr", C=1e20),
                        0.3118 * 1e20**-0.125)
    assert set(PUBLISHED) >= {"deepseek", "step-law"}
    law = prior_law("deepseek", "batch", 1e15, 4096.0, log_sd=0.1)
    assert law.source.startswith("prior:deepseek")
    assert math.isclose(float(law.predict(1e15)), 4096.0)
    assert math.isclose(law.p, 0.3271)
    # the interval widens away from the anchor (the prior's stated exponent width)
    assert law.log_sd(1e19) > 3 * law.log_sd(1e15)
    step = prior_law("step-law", "lr", 1e15, 1e-2, ratio=20.0)
    assert math.isclose(step.p, (-0.713 + 0.307) / 2)
    with pytest.raises(UserError, match="ratio"):
        prior_law("step-law", "lr", 1e15, 1e-2)

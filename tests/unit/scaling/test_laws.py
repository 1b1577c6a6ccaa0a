"""Law forms: analytic Jacobians and the Huber gradient match finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime, check_grad

from lmalloc.errors import UserError
from lmalloc.scaling.huber import huber, objective
from lmalloc.scaling.laws import LAWS, ChinchillaLaw, ComputeLaw, get_law


def _data(law_name: str, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    if law_name == "chinchilla":
        x = np.stack([10 ** rng.uniform(7, 9, n), 10 ** rng.uniform(8, 11, n)], axis=1)
    else:
        x = 10 ** rng.uniform(17, 21, (n, 1))
    return np.log(x), np.log(rng.uniform(2.0, 4.0, n))


THETAS = {
    "chinchilla": np.array([6.0, 6.0, 0.5, 0.34, 0.28]),
    "compute": np.array([5.0, 0.5, 0.1]),
}


@pytest.mark.parametrize("name", sorted(LAWS))
def test_jacobian_matches_finite_differences(name: str) -> None:
    law, (logx, _) = get_law(name), _data(name)
    theta = THETAS[name]
    pred, jac = law.log_predict_jac(theta, logx)
    np.testing.assert_allclose(pred, law.log_predict(theta, logx), rtol=1e-12)
    for i in range(logx.shape[0]):
        fd = approx_fprime(theta, lambda t, i=i: float(law.log_predict(t, logx)[i]), 1e-7)
        np.testing.assert_allclose(jac[i], fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAWS))
@pytest.mark.parametrize("delta", [1e-3, 0.5])
def test_objective_gradient_matches_finite_differences(name: str, delta: float) -> None:
    law, (logx, logy) = get_law(name), _data(name)
    w = np.random.default_rng(2).integers(0, 3, logy.size).astype(float)
    theta = THETAS[name]
    err = check_grad(
        lambda t: objective(t, law, logx, logy, w, delta)[0],
        lambda t: objective(t, law, logx, logy, w, delta)[1],
        theta,
        epsilon=1e-8,
    )
    scale = np.linalg.norm(objective(theta, law, logx, logy, w, delta)[1])
    assert err <= 1e-4 * max(scale, 1.0)


def test_log_predict_is_log_of_predict() -> None:
    for law in (ChinchillaLaw(), ComputeLaw()):
        name = law.name
        logx, _ = _data(name, 10)
        theta = THETAS[name]
        direct = law.predict(law.natural(theta), np.exp(logx))
        np.testing.assert_allclose(np.exp(law.log_predict(theta, logx)), direct, rtol=1e-12)


def test_batched_log_predict_over_grid() -> None:
    law = ChinchillaLaw()
    logx, _ = _data("chinchilla", 7)
    grid = law.init_grid()
    assert grid.shape == (4500, 5)  # the paper's grid (Appendix D.2)
    batched = law.log_predict(grid[:10], logx)
    assert batched.shape == (10, 7)
    np.testing.assert_allclose(batched[3], law.log_predict(grid[3], logx))


def test_huber_is_quadratic_then_linear() -> None:
    r = np.array([0.0, 5e-4, -1e-3, 0.01])
    np.testing.assert_allclose(huber(r, 1e-3), [0.0, 1.25e-7, 5e-7, 1e-3 * (0.01 - 5e-4)])


def test_unknown_law_names_the_known_ones() -> None:
    with pytest.raises(UserError, match="chinchilla"):
        get_law("kaplan")

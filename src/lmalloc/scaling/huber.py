"""The Huber objective on log-loss residuals, its analytic gradient, and the multi-start.

Hoffmann et al. 2022 (arXiv:2203.15556, §3.3 and Appendix D.2) fit

    min_theta  sum_i Huber_delta( log Lhat(x_i; theta) - log L_i ),   delta = 1e-3,

with L-BFGS from a grid of starting points, keeping the best. Besiroglu et al. 2024
(arXiv:2404.10102) showed the published fit had stopped early; the cure is a tight tolerance,
which is why :func:`minimize_from` sets ``ftol``/``gtol`` far below scipy's defaults. The
objective is divided by ``delta`` so that it is of order ``sum |r_i|`` (O(1)) whatever delta
is, keeping L-BFGS-B's relative tolerances meaningful. Each point carries a weight ``w_i``: 1
for the fit, the multinomial count for a bootstrap resample (same optimum as refitting the
resampled rows, without copying them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from lmalloc.scaling.laws import Law

FloatArray = NDArray[np.float64]

DEFAULT_DELTA = 1e-3
"""Huber threshold on log-loss residuals (Hoffmann et al. 2022, Appendix D.2)."""

_GRID_CHUNK = 512


def huber(r: FloatArray, delta: float) -> FloatArray:
    """Huber loss: ``r**2 / 2`` for ``|r| <= delta``, ``delta * (|r| - delta / 2)`` beyond."""
    c = np.clip(r, -delta, delta)  # c * (r - c/2) is r**2/2 inside, delta(|r| - delta/2) out
    out: FloatArray = c * (r - 0.5 * c)
    return out


def objective(
    theta: FloatArray,
    law: Law,
    logx: FloatArray,
    logy: FloatArray,
    weights: FloatArray,
    delta: float,
    penalty: Penalty | None = None,
) -> tuple[float, FloatArray]:
    """Weighted Huber objective / delta and its analytic gradient at raw ``theta`` ``(p,)``,
    plus ``penalty`` (a MAP fit's prior) when given.

    ``d/dtheta sum_i w_i H(r_i) = J^T (w * clip(r, -delta, delta))`` with ``J`` the Jacobian of
    ``log Lhat`` (the law's ``log_predict_jac``).
    """
    pred, jac = law.log_predict_jac(theta, logx)
    r = pred - logy
    wc = weights * np.clip(r, -delta, delta)  # weighted Huber derivative
    f = float(wc @ r - 0.5 * (wc @ np.clip(r, -delta, delta))) / delta  # = sum w * huber(r)
    g: FloatArray = jac.T @ wc / delta
    if penalty is not None:
        f += float(penalty.value(theta))
        g = g.copy()
        g[list(penalty.idx)] += penalty.weight * (theta[list(penalty.idx)] - penalty.mean)
    return f, g


def grid_point_losses(
    law: Law, grid: FloatArray, logx: FloatArray, logy: FloatArray, delta: float
) -> FloatArray:
    """Per-point Huber / delta of every grid start: ``(g, n)``, vectorised in chunks.

    Any weighting's objective at every start is then one product, ``H @ w``, which is how the
    bootstrap picks per-resample starts for all resamples at once.
    """
    out = np.empty((grid.shape[0], logy.shape[0]), dtype=np.float64)
    for i in range(0, grid.shape[0], _GRID_CHUNK):
        pred = law.log_predict(grid[i : i + _GRID_CHUNK], logx)  # (chunk, n)
        out[i : i + _GRID_CHUNK] = huber(pred - logy, delta) / delta
    return out


@dataclass(frozen=True)
class Penalty:
    """A Gaussian prior on some raw coordinates, in the objective's units: adds
    ``sum_j weight_j (theta_j - mean_j)**2 / 2`` (see :class:`~lmalloc.scaling.parametric.
    ExponentPrior` for how the weights follow from the prior's sd and the data's noise)."""

    idx: tuple[int, ...]
    mean: FloatArray
    weight: FloatArray

    def value(self, theta: FloatArray) -> FloatArray:
        """The penalty at ``theta`` ``(..., p)`` → ``(...)``."""
        d = theta[..., list(self.idx)] - self.mean
        out: FloatArray = 0.5 * (self.weight * d * d).sum(axis=-1)
        return out


@dataclass(frozen=True)
class Optimum:
    """The best of several L-BFGS-B runs."""

    theta: FloatArray
    value: float
    converged: bool


def minimize_from(
    law: Law,
    starts: FloatArray,
    logx: FloatArray,
    logy: FloatArray,
    weights: FloatArray,
    delta: float,
    maxiter: int = 2000,
    penalty: Penalty | None = None,
) -> Optimum:
    """Run L-BFGS-B (analytic gradient) from each start ``(s, p)``; keep the lowest objective."""
    best: Optimum | None = None
    for x0 in starts:
        res = minimize(
            objective,
            x0,
            args=(law, logx, logy, weights, delta, penalty),
            jac=True,
            method="L-BFGS-B",
            bounds=law.bounds(),
            options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9},
        )
        if np.isfinite(res.fun) and (best is None or res.fun < best.value):
            best = Optimum(np.asarray(res.x, dtype=np.float64), float(res.fun), bool(res.success))
    if best is None:
        raise FloatingPointError("every L-BFGS-B start ended at a non-finite objective")
    return best


def distinct_top(order: NDArray[np.intp], grid: FloatArray, k: int) -> FloatArray:
    """The first ``k`` grid points in ``order`` (best first), skipping exact duplicates."""
    picked: list[FloatArray] = []
    for i in order:
        if not any(np.array_equal(grid[i], p) for p in picked):
            picked.append(grid[i])
        if len(picked) == k:
            break
    return np.asarray(picked, dtype=np.float64)

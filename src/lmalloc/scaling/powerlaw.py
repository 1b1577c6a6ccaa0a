"""Power laws ``y = k x**p`` fitted in log-log, with Student-t intervals.

``fit_power_law`` is (weighted) least squares of ``ln y`` on ``ln x``. Its intervals are the
classical Student-t ones (exact under Gaussian log-residuals): with only a handful of scales,
as in a hyperparameter sweep, a bootstrap over 3-6 points is too coarse to be trusted, while
the t interval is honest about the few degrees of freedom.

The hyperparameter laws (:mod:`lmalloc.scaling.hyperparams`) bootstrap instead: their
per-scale optima carry the noise, not a residual variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lmalloc.errors import invalid
from lmalloc.scaling.checks import require_positive_finite, require_varied
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate, check_level

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PowerLawFit:
    """``y = k x**p`` fitted in log-log: coefficients, their covariance and residual dof.

    ``cov`` is the covariance of ``(ln k, p)`` (2x2, as nested tuples); ``dof = n - 2``.
    """

    k: float
    p: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    dof: int
    level: float
    x_range: tuple[float, float]
    n_points: int

    def _t(self, level: float | None) -> float:
        lv = check_level(level or self.level)
        return float(stats.t.ppf(0.5 + lv / 2.0, self.dof))

    def estimates(self) -> dict[str, Estimate]:
        """``k`` and ``p`` with t intervals (k's is the exponentiated interval of ln k)."""
        t = self._t(None)
        se_lnk, se_p = np.sqrt(self.cov[0][0]), np.sqrt(self.cov[1][1])
        lnk = np.log(self.k)
        return {
            "k": Estimate(
                self.k,
                float(np.exp(lnk - t * se_lnk)),
                float(np.exp(lnk + t * se_lnk)),
                self.level,
            ),
            "p": Estimate(self.p, self.p - t * se_p, self.p + t * se_p, self.level),
        }

    def predict(self, x: ArrayLike) -> FloatArray:
        """``k x**p``."""
        out: FloatArray = self.k * np.asarray(x, dtype=np.float64) ** self.p
        return out

    def interval(self, x: ArrayLike, level: float | None = None) -> tuple[FloatArray, FloatArray]:
        """Confidence interval of the fitted law (the mean of ln y) at ``x``."""
        lx = np.log(np.asarray(x, dtype=np.float64))
        c = np.asarray(self.cov)
        se = np.sqrt(c[0, 0] + 2 * lx * c[0, 1] + lx * lx * c[1, 1])
        mid = np.log(self.k) + self.p * lx
        t = self._t(level)
        return np.exp(mid - t * se), np.exp(mid + t * se)

    def predict_estimate(self, x: float) -> Estimate:
        lo, hi = self.interval(x)
        return Estimate(float(self.predict(x)), float(lo), float(hi), self.level)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "p": self.p,
            "cov": [list(r) for r in self.cov],
            "dof": self.dof,
            "level": self.level,
            "x_range": list(self.x_range),
            "n_points": self.n_points,
            "intervals": {k: v.to_dict() for k, v in self.estimates().items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PowerLawFit:
        c = d["cov"]
        return cls(
            float(d["k"]),
            float(d["p"]),
            ((float(c[0][0]), float(c[0][1])), (float(c[1][0]), float(c[1][1]))),
            int(d["dof"]),
            float(d["level"]),
            (float(d["x_range"][0]), float(d["x_range"][1])),
            int(d["n_points"]),
        )


def fit_power_law(
    x: ArrayLike,
    y: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    level: float = DEFAULT_LEVEL,
    what: str = "y",
) -> PowerLawFit:
    """Fit ``y = k x**p`` by (weighted) least squares in log-log, with Student-t intervals.

    Needs at least 3 points at 3 distinct x (2 parameters + 1 degree of freedom).

    >>> fit = fit_power_law([1e18, 1e19, 1e20, 1e21], [3e-3, 2e-3, 1.3e-3, 0.9e-3])
    >>> round(fit.p, 3), fit.estimates()["p"].contains(-0.176)
    (-0.176, True)
    """
    level = check_level(level)
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise invalid(what, f"{ys.size} values", f"one per x ({xs.size})")
    require_positive_finite("x", xs)
    require_positive_finite(what, ys)
    require_varied("x", xs, f"the exponent of {what}")
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    X = np.stack([np.ones_like(xs), np.log(xs)], axis=1)
    ly = np.log(ys)
    XtW = X.T * w
    XtWX_inv = np.linalg.inv(XtW @ X)
    beta = XtWX_inv @ (XtW @ ly)
    dof = xs.size - 2
    resid = ly - X @ beta
    s2 = float(w @ resid**2) / dof
    cov = XtWX_inv * s2
    return PowerLawFit(
        k=float(np.exp(beta[0])),
        p=float(beta[1]),
        cov=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        dof=dof,
        level=level,
        x_range=(float(xs.min()), float(xs.max())),
        n_points=int(xs.size),
    )

"""Power laws ``y = k x**p`` fitted in log-log, and the hyperparameter laws built on them.

``fit_power_law`` is (weighted) least squares of ``ln y`` on ``ln x``. Its intervals are the
classical Student-t ones (exact under Gaussian log-residuals): with only a handful of scales,
as in a hyperparameter sweep, a bootstrap over 3-6 points is too coarse to be trusted, while
the t interval is honest about the few degrees of freedom.

Hyperparameter laws (learning rate and batch size against compute, as in DeepSeek LLM, Bi et
al. 2024, arXiv:2401.02954 §3.1, and Porian et al. 2024, arXiv:2406.19146): trials are grouped
by scale (compute C, or N, grouped like IsoFLOP levels), the lowest-loss trial of each scale is
taken as that scale's optimum, and a power law is fitted through the optima. "Best per scale"
is the simplest estimator and biased by the sweep's grid spacing (its error is at most half a
grid step in log space), so use a fine grid around the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lmalloc.errors import UserError, invalid
from lmalloc.scaling.checks import require_positive_finite, require_varied
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate, check_level
from lmalloc.scaling.isoflop import DEFAULT_TOL_DECADES, group_levels

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


@dataclass(frozen=True)
class HyperparameterLaws:
    """Power laws for the best learning rate and batch size against ``scale`` (``"C"``/``"N"``).

    ``best`` lists the chosen trial per scale: ``(scale, lr, batch, loss)``.
    """

    scale: str
    lr: PowerLawFit | None
    batch: PowerLawFit | None
    best: tuple[tuple[float, float, float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "hyperparameters",
            "scale": self.scale,
            "lr": self.lr.to_dict() if self.lr else None,
            "batch": self.batch.to_dict() if self.batch else None,
            "best": [list(b) for b in self.best],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HyperparameterLaws:
        return cls(
            str(d["scale"]),
            PowerLawFit.from_dict(d["lr"]) if d.get("lr") else None,
            PowerLawFit.from_dict(d["batch"]) if d.get("batch") else None,
            tuple((float(a), float(b), float(c), float(e)) for a, b, c, e in d["best"]),
        )


def fit_hyperparameter_laws(
    scale: ArrayLike,
    loss: ArrayLike,
    *,
    lr: ArrayLike | None = None,
    batch: ArrayLike | None = None,
    scale_name: str = "C",
    tol_decades: float = DEFAULT_TOL_DECADES,
    level: float = DEFAULT_LEVEL,
) -> HyperparameterLaws:
    """Best learning rate and batch size per scale, and power laws through them.

    ``scale`` is each trial's compute (or N: say so with ``scale_name="N"``); trials within
    ``tol_decades`` of each other share a scale. Needs 3+ scales.

    >>> C = np.repeat([1e17, 1e18, 1e19], 3)
    >>> lr = np.tile([1e-3, 2e-3, 4e-3], 3)
    >>> loss = np.array([3.1, 3.0, 3.2, 2.9, 2.8, 2.85, 2.7, 2.75, 2.8])
    >>> laws = fit_hyperparameter_laws(C, loss, lr=lr)
    >>> [b[1] for b in laws.best]
    [0.002, 0.002, 0.001]
    """
    s = np.asarray(scale, dtype=np.float64).ravel()
    y = np.asarray(loss, dtype=np.float64).ravel()
    require_positive_finite(scale_name, s)
    if lr is None and batch is None:
        raise UserError("hyperparameter laws need an lr column, a batch column, or both")
    labels = group_levels(s, tol_decades)
    picks = [
        int(np.flatnonzero(labels == g)[np.argmin(y[labels == g])])
        for g in range(labels.max() + 1)
    ]
    if len(picks) < 3:
        raise UserError(
            f"hyperparameter laws need trials at 3 or more scales ({scale_name}); "
            f"found {len(picks)}: add trials at {3 - len(picks)} more scale(s)"
        )
    idx = np.asarray(picks)
    scale_best = np.array([np.exp(np.log(s[labels == labels[i]]).mean()) for i in idx])
    cols = {
        n: None if v is None else np.asarray(v, dtype=np.float64).ravel()
        for n, v in (("lr", lr), ("batch", batch))
    }
    fits = {
        n: None if v is None else fit_power_law(scale_best, v[idx], level=level, what=n)
        for n, v in cols.items()
    }
    nan = float("nan")
    best = tuple(
        (
            float(scale_best[j]),
            float(cols["lr"][i]) if cols["lr"] is not None else nan,
            float(cols["batch"][i]) if cols["batch"] is not None else nan,
            float(y[i]),
        )
        for j, i in enumerate(idx)
    )
    return HyperparameterLaws(scale_name, fits["lr"], fits["batch"], best)

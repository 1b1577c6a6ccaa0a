"""How much loss weight-only quantization costs a trained model: a law in N, D and bits.

Kumar et al. 2024 ("Scaling Laws for Precision", arXiv:2411.04330, eq. 3) found the
post-training quantization degradation of a model trained on D tokens with N parameters to be

    δ(N, D, b) = C · D^γ_D / N^γ_N · exp(-b / γ_b)

— more data makes a model more fragile, more parameters less, and each bit removes a constant
fraction. The law is linear in its logarithm, so it is fitted by least squares on
``log δ`` against ``(1, log D, -log N, -b)``, using only measurements above a noise floor (a
near-zero or negative δ of an 8-bit model carries no information about the slope). Rows from
the same model are correlated (they share its weights), so the interval comes from a cluster
bootstrap that resamples models, not rows.

The planner adds δ to the scaling law's loss to choose N, D and the format jointly under a
deployment memory limit (:mod:`lmalloc.plan.allocate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmalloc.errors import UserError
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate, FloatArray, check_level

NOISE_FLOOR = 1e-3
"""Degradations (nats per token) below this are not used in the fit: on a few ten thousand
evaluation tokens an 8-bit model's δ is ±1e-4 noise, and its logarithm would dominate."""


@dataclass(frozen=True)
class PrecisionLaw:
    """``δ(N, D, b) = exp(log_c) · D^gamma_d / N^gamma_n · exp(-b / gamma_b)`` (nats/token).

    ``boot`` holds the bootstrap's parameter vectors ``(log_c, gamma_d, gamma_n, 1/gamma_b)``,
    one per row, for intervals; ``points`` the number of measurements fitted.
    """

    log_c: float
    gamma_d: float
    gamma_n: float
    gamma_b: float
    boot: FloatArray
    points: int
    level: float = DEFAULT_LEVEL

    @property
    def coef(self) -> FloatArray:
        return np.array([self.log_c, self.gamma_d, self.gamma_n, 1.0 / self.gamma_b])

    def predict(self, N: float, D: float, bits: int | None) -> Estimate:
        """Predicted degradation; ``bits=None`` (unquantized) is exactly 0."""
        if bits is None:
            return Estimate(0.0, 0.0, 0.0, self.level)
        x = np.array([1.0, np.log(D), -np.log(N), -float(bits)])
        value = float(np.exp(x @ self.coef))
        if len(self.boot) < 2:
            return Estimate(value, float("nan"), float("nan"), self.level)
        draws = np.exp(self.boot @ x)
        tail = 50.0 * (1.0 - self.level)
        lo, hi = np.percentile(draws, [tail, 100.0 - tail])
        return Estimate(value, float(lo), float(hi), self.level)

    def to_dict(self) -> dict[str, Any]:
        return {"law": "kumar2024_ptq", "log_c": self.log_c, "gamma_d": self.gamma_d,
                "gamma_n": self.gamma_n, "gamma_b": self.gamma_b, "points": self.points,
                "level": self.level, "boot": self.boot.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrecisionLaw:
        try:
            return cls(float(d["log_c"]), float(d["gamma_d"]), float(d["gamma_n"]),
                       float(d["gamma_b"]), np.asarray(d.get("boot", []), dtype=float)
                       .reshape(-1, 4), int(d["points"]), float(d.get("level", DEFAULT_LEVEL)))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"not a precision law ({type(e).__name__}: {e})") from None


def _design(N: FloatArray, D: FloatArray, bits: FloatArray) -> FloatArray:
    return np.column_stack([np.ones_like(N), np.log(D), -np.log(N), -bits])


def _solve(X: FloatArray, y: FloatArray) -> FloatArray | None:
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    return np.asarray(np.linalg.lstsq(X, y, rcond=None)[0], dtype=np.float64)


def fit_precision_law(
    N: Any, D: Any, bits: Any, delta: Any, *, floor: float = NOISE_FLOOR,
    bootstrap: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0,
) -> PrecisionLaw:
    """Fit the law to measured degradations (one row per model and format).

    Raises:
        UserError: fewer than five measurements above ``floor``, or not enough variety (two
            distinct N, D and bit widths are needed to identify the three exponents), or a
            fitted bit scale that is not positive (more bits would cost more).
    """
    check_level(level)
    N, D, b, d = (np.asarray(v, dtype=float) for v in (N, D, bits, delta))
    use = np.isfinite(d) & (d > floor) & (N > 0) & (D > 0)
    if use.sum() < 5:
        raise UserError(f"the precision law needs at least 5 degradations above {floor:g} "
                        f"nats; {int(use.sum())} of {len(d)} measured are")
    X, y = _design(N[use], D[use], b[use]), np.log(d[use])
    coef = _solve(X, y)
    if coef is None:
        raise UserError("the precision law needs measurements at two or more distinct N, D "
                        "and bit widths (above the noise floor)")
    if coef[3] <= 0:
        raise UserError(f"the fitted precision law says fewer bits cost less (1/γ_b = "
                        f"{coef[3]:.3g}): the measurements are noise; measure more tokens")
    models = np.unique(np.column_stack([N[use], D[use]]), axis=0, return_inverse=True)[1]
    boot = _cluster_bootstrap(X, y, models.ravel(), bootstrap, seed)
    return PrecisionLaw(float(coef[0]), float(coef[1]), float(coef[2]), float(1.0 / coef[3]),
                        boot, int(use.sum()), level)


def _cluster_bootstrap(X: FloatArray, y: FloatArray, cluster: np.ndarray, n: int,
                       seed: int) -> FloatArray:
    """Refits on resampled models; degenerate resamples (rank-deficient) are skipped."""
    rng = np.random.default_rng(seed)
    ids = np.unique(cluster)
    out = []
    for _ in range(n):
        pick = rng.choice(ids, size=len(ids), replace=True)
        rows = np.concatenate([np.flatnonzero(cluster == i) for i in pick])
        coef = _solve(X[rows], y[rows])
        if coef is not None:
            out.append(coef)
    return np.array(out, dtype=float).reshape(-1, 4)

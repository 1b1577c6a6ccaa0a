"""Chinchilla "approach 2": IsoFLOP profiles, their minima, and power laws N*(C), D*(C).

Math (Hoffmann et al. 2022, arXiv:2203.15556, §3.2): runs are grouped by compute level C
(given, or ``C = k N D``; grouped by gaps in log10 C larger than ``tol_decades``). Along each
level the loss is fitted by a parabola in ``x = ln N``, ``L ~ c0 + c1 x + c2 x**2``, whose
minimum ``N_opt(C) = exp(-c1 / (2 c2))`` needs ``c2 > 0`` and at least 3 model sizes. Then

    ln N_opt = ln k_N + a ln C,     ln D_opt = ln k_D + b ln C,   D_opt = C / (k N_opt),

by least squares over levels (so ``b = 1 - a`` when every C is ``k N D``).

Intervals: a stratified bootstrap — runs are resampled with replacement *within* each level
(the design's levels are fixed), every parabola and both power laws are refitted, and the
percentile interval is taken. All resamples are solved at once as batched 3x3 normal equations.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lmalloc.errors import UserError, invalid
from lmalloc.scaling.checks import MAX_EXTRAPOLATION, require_positive_finite, warn_extrapolation
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate, check_level, estimate

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

MIN_LEVELS = 3
MIN_SIZES = 3
MAX_MIN_DISTANCE = 3.0
"""A parabola's minimum further than this many times the level's log-N range is no minimum."""
DEFAULT_TOL_DECADES = 0.05
"""Runs whose compute differs by less than 10**0.05 (~12 %) from a neighbour share a level."""


def group_levels(C: FloatArray, tol_decades: float = DEFAULT_TOL_DECADES) -> IntArray:
    """Level index per run: sort log10 C and start a new level at every gap > ``tol_decades``.

    >>> group_levels(np.array([1e18, 1.05e18, 1e19, 0.98e18])).tolist()
    [0, 0, 1, 0]
    """
    logc = np.log10(C)
    order = np.argsort(logc)
    starts = np.concatenate([[0], (np.diff(logc[order]) > tol_decades).astype(np.intp)])
    labels = np.empty(C.shape[0], dtype=np.intp)
    labels[order] = np.cumsum(starts)
    return labels


def parabola_minima(x: FloatArray, y: FloatArray, W: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Weighted least-squares parabolas ``y ~ c0 + c1 x + c2 x**2`` for each weight row.

    ``W`` is ``(R, n)``; returns ``(x_min, c2)`` of shape ``(R,)``, NaN where a row has fewer
    than 3 distinct x with weight, the parabola opens downward, or its minimum lies more than
    ``MAX_MIN_DISTANCE`` times the x range from the data (a straight profile: no minimum).
    """
    xm = x.mean()
    X = np.stack([np.ones_like(x), x - xm, (x - xm) ** 2], axis=1)  # (n, 3), centred
    XtWX = np.einsum("ni,rn,nj->rij", X, W, X)
    XtWy = np.einsum("ni,rn,n->ri", X, W, y)
    uniq, inv = np.unique(x, return_inverse=True)
    distinct = ((W @ np.eye(uniq.size)[inv]) > 0).sum(axis=1)  # (R,)
    ok = distinct >= MIN_SIZES
    coef = np.full((W.shape[0], 3), np.nan)
    if ok.any():
        coef[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    c1, c2 = coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xmin = xm - c1 / (2.0 * c2)
    # A minimum many ranges away from the data is a nearly straight profile, not a minimum.
    far = np.abs(xmin - xm) > MAX_MIN_DISTANCE * max(float(np.ptp(x)), 1e-12)
    return np.where((c2 > 0) & ~far, xmin, np.nan), c2


def _loglog(logC: FloatArray, logY: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Ordinary least squares of ``logY (R, L)`` on ``logC (L,)``: (intercept, slope) ``(R,)``."""
    xc = logC - logC.mean()
    slope = (logY - logY.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    return logY.mean(axis=1) - slope * logC.mean(), slope


@dataclass(frozen=True)
class IsoFLOPLevel:
    """One compute level: its runs, the parabola's minimum and whether it lies inside the data."""

    C: float
    n_runs: int
    N_opt: float
    D_opt: float
    curvature: float
    N_range: tuple[float, float]

    @property
    def inside(self) -> bool:
        """Whether the minimum lies within the sizes trained (else it is extrapolated)."""
        return self.N_range[0] <= self.N_opt <= self.N_range[1]


@dataclass(frozen=True, eq=False)
class IsoFLOPFit:
    """Power laws ``N* = k_N C**a`` and ``D* = k_D C**b`` with bootstrap replicates.

    ``samples`` is ``(R, 4)``: ``(k_N, a, k_D, b)`` per successful resample.
    """

    levels: tuple[IsoFLOPLevel, ...]
    k_N: float
    a: float
    k_D: float
    b: float
    samples: FloatArray
    level: float
    flops_per_token_per_param: float
    param_convention: str
    bootstrap_failed: int = 0

    NAMES = ("k_N", "a", "k_D", "b")

    def estimates(self) -> dict[str, Estimate]:
        """The four power-law parameters with percentile intervals."""
        vals = (self.k_N, self.a, self.k_D, self.b)
        return {
            n: estimate(v, self.samples[:, i], self.level)
            for i, (n, v) in enumerate(zip(self.NAMES, vals, strict=True))
        }

    def allocate(
        self, C: float, max_extrapolation: float = MAX_EXTRAPOLATION
    ) -> tuple[Estimate, Estimate]:
        """``(N*, D*)`` at compute ``C`` with intervals; warns far outside the levels.

        >>> from lmalloc.scaling.simulate import simulate_runs
        >>> runs = simulate_runs(seed=0)
        >>> fit = fit_isoflop(runs.N, runs.loss, C=runs.C, bootstrap=100)
        >>> N, D = fit.allocate(1e20)
        >>> round(N.value / 1e8, 1)  # true N*(1e20) of the simulated law: 6.45e8
        6.0
        """
        Cs = [lv.C for lv in self.levels]
        warn_extrapolation(C, min(Cs), max(Cs), limit=max_extrapolation)
        s = self.samples
        N = estimate(self.k_N * C**self.a, s[:, 0] * C ** s[:, 1], self.level)
        D = estimate(self.k_D * C**self.b, s[:, 2] * C ** s[:, 3], self.level)
        return N, D

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "isoflop",
            "params": {"k_N": self.k_N, "a": self.a, "k_D": self.k_D, "b": self.b},
            "intervals": {k: v.to_dict() for k, v in self.estimates().items()},
            "levels": [
                {
                    "C": lv.C,
                    "n_runs": lv.n_runs,
                    "N_opt": lv.N_opt,
                    "D_opt": lv.D_opt,
                    "curvature": lv.curvature,
                    "N_range": list(lv.N_range),
                }
                for lv in self.levels
            ],
            "bootstrap_samples": self.samples.tolist(),
            "level": self.level,
            "flops_per_token_per_param": self.flops_per_token_per_param,
            "param_convention": self.param_convention,
            "bootstrap_failed": self.bootstrap_failed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IsoFLOPFit:
        levels = tuple(
            IsoFLOPLevel(
                float(v["C"]),
                int(v["n_runs"]),
                float(v["N_opt"]),
                float(v["D_opt"]),
                float(v["curvature"]),
                (float(v["N_range"][0]), float(v["N_range"][1])),
            )
            for v in d["levels"]
        )
        p = d["params"]
        return cls(
            levels=levels,
            k_N=float(p["k_N"]),
            a=float(p["a"]),
            k_D=float(p["k_D"]),
            b=float(p["b"]),
            samples=np.asarray(d["bootstrap_samples"], dtype=np.float64).reshape(-1, 4),
            level=float(d["level"]),
            flops_per_token_per_param=float(d["flops_per_token_per_param"]),
            param_convention=str(d["param_convention"]),
            bootstrap_failed=int(d.get("bootstrap_failed", 0)),
        )


def _usable_levels(N: FloatArray, C: FloatArray, labels: IntArray) -> list[IntArray]:
    """Run indices of each level with >= 3 distinct sizes; warn on or refuse the others."""
    usable, short = [], []
    for lv in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == lv)
        sizes = np.unique(N[idx]).size
        if sizes >= MIN_SIZES:
            usable.append(idx)
        else:
            c = float(np.exp(np.log(C[idx]).mean()))
            short.append(f"C~{c:.3g} ({sizes} size(s): needs {MIN_SIZES - sizes} more)")
    if len(usable) < MIN_LEVELS:
        lacking = "; ".join(short) or "none"
        raise UserError(
            f"the IsoFLOP fit needs at least {MIN_LEVELS} compute levels with at least "
            f"{MIN_SIZES} model sizes each; found {len(usable)} usable level(s) — add "
            f"{MIN_LEVELS - len(usable)} more. Levels lacking sizes: {lacking}"
        )
    if short:
        warnings.warn(
            f"IsoFLOP fit skips compute levels with too few sizes: {'; '.join(short)}",
            UserWarning,
            stacklevel=3,
        )
    return usable


def fit_isoflop(
    N: ArrayLike,
    loss: ArrayLike,
    *,
    C: ArrayLike | None = None,
    D: ArrayLike | None = None,
    flops_per_token_per_param: float = 6.0,
    param_convention: str = "total",
    tol_decades: float = DEFAULT_TOL_DECADES,
    bootstrap: int = 200,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
) -> IsoFLOPFit:
    """Fit IsoFLOP parabolas per compute level and power laws for N*(C) and D*(C).

    Give ``C`` per run, or ``D`` (then ``C = k N D``, k = ``flops_per_token_per_param``).
    See the module docstring for the math and the stratified bootstrap.

    Raises:
        UserError: fewer than 3 levels with 3+ sizes (names the levels lacking sizes), a level
            whose parabola has no minimum, or bad values.

    >>> from lmalloc.scaling.simulate import simulate_runs
    >>> runs = simulate_runs(seed=0)
    >>> fit = fit_isoflop(runs.N, runs.loss, C=runs.C, bootstrap=100)
    >>> round(fit.a, 2), fit.estimates()["a"].contains(0.28 / 0.62)
    (0.43, True)
    """
    level = check_level(level)
    if not flops_per_token_per_param > 0:
        raise invalid("flops_per_token_per_param", flops_per_token_per_param, "a positive number")
    N_ = np.asarray(N, dtype=np.float64).ravel()
    y = np.asarray(loss, dtype=np.float64).ravel()
    if C is not None:
        C_ = np.asarray(C, dtype=np.float64).ravel()
    elif D is not None:
        C_ = flops_per_token_per_param * N_ * np.asarray(D, dtype=np.float64).ravel()
    else:
        raise UserError("the IsoFLOP fit needs each run's compute C, or its tokens D (C = k N D)")
    if not N_.shape == y.shape == C_.shape:
        raise invalid("runs", (N_.shape, y.shape, C_.shape), "N, loss and C of equal length")
    for name, v in (("N", N_), ("loss", y), ("C", C_)):
        require_positive_finite(name, v)
    groups = _usable_levels(N_, C_, group_levels(C_, tol_decades))
    rng = np.random.default_rng(seed)
    levels: list[IsoFLOPLevel] = []
    xmins = np.empty((bootstrap, len(groups)))
    for j, idx in enumerate(groups):
        x = np.log(N_[idx])
        c_level = float(np.exp(np.log(C_[idx]).mean()))
        xmin, c2 = parabola_minima(x, y[idx], np.ones((1, idx.size)))
        if not np.isfinite(xmin[0]):
            raise UserError(
                f"the IsoFLOP profile at C~{c_level:.3g} has no minimum near its runs (loss "
                f"does not curve up in log N, curvature {c2[0]:.3g}): add smaller and larger "
                "models around its best one"
            )
        n_opt = float(np.exp(xmin[0]))
        levels.append(
            IsoFLOPLevel(
                c_level,
                int(idx.size),
                n_opt,
                c_level / (flops_per_token_per_param * n_opt),
                float(c2[0]),
                (float(N_[idx].min()), float(N_[idx].max())),
            )
        )
        W = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=bootstrap)
        xmins[:, j], _ = parabola_minima(x, y[idx], W.astype(np.float64))
    outside = [f"C~{lv.C:.3g}" for lv in levels if not lv.inside]
    if outside:
        warnings.warn(
            f"IsoFLOP minimum lies outside the sizes trained at {', '.join(outside)}: "
            "add models on the far side",
            UserWarning,
            stacklevel=2,
        )
    return _power_laws(levels, xmins, flops_per_token_per_param, param_convention, level)


def _power_laws(
    levels: list[IsoFLOPLevel], xmins: FloatArray, k: float, convention: str, level: float
) -> IsoFLOPFit:
    logC = np.log([lv.C for lv in levels])
    logN = np.log([[lv.N_opt for lv in levels]])
    i_N, a = _loglog(logC, logN)
    i_D, b = _loglog(logC, logC[None, :] - np.log(k) - logN)
    ok = np.all(np.isfinite(xmins), axis=1)
    bi_N, ba = _loglog(logC, xmins[ok])
    bi_D, bb = _loglog(logC, logC[None, :] - np.log(k) - xmins[ok])
    samples = np.stack([np.exp(bi_N), ba, np.exp(bi_D), bb], axis=1)
    return IsoFLOPFit(
        levels=tuple(levels),
        k_N=float(np.exp(i_N[0])),
        a=float(a[0]),
        k_D=float(np.exp(i_D[0])),
        b=float(b[0]),
        samples=samples,
        level=level,
        flops_per_token_per_param=float(k),
        param_convention=convention,
        bootstrap_failed=int((~ok).sum()),
    )

"""Hyperparameter laws: the best learning rate and batch size as power laws of compute.

**Per-scale optimum.** Trials are grouped by scale (compute C, or N; grouped like IsoFLOP
levels). Near its optimum the loss is a bowl in the logarithm of each hyperparameter (the
learning-rate and batch-size curves of Bi et al. 2024, arXiv:2401.02954, Fig. 3; Li et al.
2025, arXiv:2503.04715, Fig. 2), so within a scale the loss of the ``min(n, max(keep, n/2))``
lowest-loss trials is fitted by a quadratic in ``u = ln h`` (one or two hyperparameters, with
the cross term), and the optimum is its stationary point ``u* = -H^-1 g``. A quadratic that
does not open upwards, or whose minimum lies beyond half the searched range of ``u``, is not
trusted: the scale's best trial is used instead and the scale is marked ``"best trial"``.

**Law.** ``ln h*(s) = ln k + p ln s`` by least squares over the scales' optima (two scales
determine it exactly).

**Intervals.** A stratified bootstrap: each scale's trials are resampled with replacement,
every per-scale optimum and the law are refitted, and ``k``, ``p`` and any prediction get the
percentile interval of the replicates. With only two scales this is the honest spread of the
exponent that the trial noise allows (a t interval would have no degrees of freedom).

**Priors.** Published laws (:data:`PUBLISHED`) are named priors: :func:`prior_law` turns one
into a law anchored at a measured scale (its exponent, the data's level), and the result says
so in ``source``. They are never used silently: a law fitted from the run's own trials has
``source = "fitted"``.

>>> rng = np.random.default_rng(0)
>>> C = np.repeat([1e15, 1e17], 30)
>>> lr = np.exp(rng.uniform(-9, -3, C.size))
>>> loss = 3.0 + 0.05 * (np.log(lr) - np.log(0.5 * C ** -0.2)) ** 2
>>> laws = fit_hyperparameter_laws(C, loss, lr=lr, bootstrap=50)
>>> round(laws.lr.p, 3)
-0.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lmalloc.errors import UserError, invalid
from lmalloc.scaling.checks import require_positive_finite
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate, check_level, estimate
from lmalloc.scaling.isoflop import DEFAULT_TOL_DECADES, group_levels

FloatArray = NDArray[np.float64]

HP_NAMES = ("lr", "batch")
MIN_SCALES = 2
KEEP = 8  # the quadratic sees at least this many of a scale's best trials (all, if fewer)
DEFAULT_HP_BOOTSTRAP = 200

PUBLISHED: dict[str, dict[str, Any]] = {
    "deepseek": {
        "reference": "Bi et al. 2024, DeepSeek LLM, arXiv:2401.02954, eq. 1 (C in FLOPs, "
                     "batch in tokens)",
        "lr": {"k": 0.3118, "exponents": {"C": -0.1250}},
        "batch": {"k": 0.2920, "exponents": {"C": 0.3271}},
    },
    "step-law": {
        "reference": "Li et al. 2025, Predictable Scale (Step Law), arXiv:2503.04715 "
                     "(N parameters, D tokens, batch in tokens)",
        "lr": {"k": 1.79, "exponents": {"N": -0.713, "D": 0.307}},
        "batch": {"k": 0.58, "exponents": {"D": 0.571}},
    },
}
"""Published hyperparameter laws, as monomials ``k * prod x**e`` over ``x`` in C, N, D.
Porian et al. 2024 (arXiv:2406.19146) fit such laws too; their constants are per data set and
are not encoded here. These are other setups' answers (models, data, optimiser settings): use
them as named priors, never as this run's law."""


def published_value(name: str, hp: str, **x: float) -> float:
    """A published law's value, e.g. ``published_value("deepseek", "lr", C=1e20)``."""
    if name not in PUBLISHED:
        raise invalid("prior", name, f"one of {sorted(PUBLISHED)}")
    law = PUBLISHED[name][hp]
    missing = sorted(set(law["exponents"]) - set(x))
    if missing:
        raise invalid("inputs", sorted(x), f"{missing} for the {name} {hp} law")
    return float(law["k"] * math.prod(x[v] ** e for v, e in law["exponents"].items()))


@dataclass(frozen=True, eq=False)
class HPLaw:
    """``h*(s) = k s**p`` for one hyperparameter, with bootstrap replicates of ``(ln k, p)``.

    ``optima`` lists per scale ``(s, h*, method)`` (method ``"quadratic"`` or
    ``"best trial"``); ``source`` says where the law comes from (``"fitted"``, or
    ``"prior:<name> anchored at s=..."``); ``curvature`` is ``c`` in
    ``loss ≈ L* + c (ln h - ln h*)²`` (the median over the scales whose bowl was trusted;
    None if none was): what a mis-set value costs.
    """

    name: str
    scale: str
    k: float
    p: float
    samples: FloatArray  # (R, 2): ln k, p
    level: float
    optima: tuple[tuple[float, float, str], ...]
    source: str = "fitted"
    curvature: float | None = None

    def predict(self, s: ArrayLike) -> FloatArray:
        out: FloatArray = self.k * np.asarray(s, dtype=np.float64) ** self.p
        return out

    def predict_estimate(self, s: float) -> Estimate:
        """The law at one scale, with the percentile interval of its replicates."""
        reps = np.exp(self.samples[:, 0] + self.samples[:, 1] * math.log(s))
        return estimate(float(self.predict(s)), reps, self.level)

    def log_sd(self, s: float) -> float:
        """Standard deviation of ``ln h*(s)`` over the replicates (0 without any)."""
        if self.samples.shape[0] < 2:
            return 0.0
        return float(np.std(self.samples[:, 0] + self.samples[:, 1] * math.log(s), ddof=1))

    def estimates(self) -> dict[str, Estimate]:
        """``k`` and ``p`` with their percentile intervals."""
        return {"k": estimate(self.k, np.exp(self.samples[:, 0]), self.level),
                "p": estimate(self.p, self.samples[:, 1], self.level)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "k": self.k, "p": self.p,
                "samples": self.samples.tolist(), "level": self.level,
                "optima": [list(o) for o in self.optima], "source": self.source,
                "curvature": self.curvature,
                "intervals": {k: v.to_dict() for k, v in self.estimates().items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HPLaw:
        return cls(str(d["name"]), str(d["scale"]), float(d["k"]), float(d["p"]),
                   np.asarray(d["samples"], dtype=np.float64).reshape(-1, 2),
                   float(d["level"]),
                   tuple((float(s), float(h), str(m)) for s, h, m in d["optima"]),
                   str(d.get("source", "fitted")),
                   None if d.get("curvature") is None else float(d["curvature"]))


@dataclass(frozen=True, eq=False)
class HyperparameterLaws:
    """The learning-rate and batch laws of one set of trials (either may be None)."""

    scale: str
    lr: HPLaw | None
    batch: HPLaw | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "hyperparameters", "scale": self.scale,
                "lr": self.lr.to_dict() if self.lr else None,
                "batch": self.batch.to_dict() if self.batch else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HyperparameterLaws:
        return cls(str(d["scale"]), HPLaw.from_dict(d["lr"]) if d.get("lr") else None,
                   HPLaw.from_dict(d["batch"]) if d.get("batch") else None)


def _design(U: FloatArray) -> FloatArray:
    """Quadratic design matrix in ``U`` (n, q): 1, u_i, u_i u_j (i <= j)."""
    n, q = U.shape
    cols = [np.ones(n)] + [U[:, i] for i in range(q)]
    cols += [U[:, i] * U[:, j] for i in range(q) for j in range(i, q)]
    return np.stack(cols, axis=1)


def scale_optimum(U: FloatArray, y: FloatArray) -> tuple[FloatArray, str]:
    """The optimum ``u*`` (q,) of one scale's trials (see the module docstring)."""
    u, method, _ = _bowl(U, y)
    return u, method


def _bowl(U: FloatArray, y: FloatArray) -> tuple[FloatArray, str, FloatArray | None]:
    """:func:`scale_optimum` plus the bowl's Hessian in ``u`` (None when not trusted)."""
    n, q = U.shape
    best = int(np.argmin(y))
    need = 1 + q + q * (q + 1) // 2
    keep = np.argsort(y)[: min(n, max(KEEP, n // 2))]
    if keep.size <= need:
        return U[best], "best trial", None
    Uk, yk = U[keep], y[keep]
    centre = Uk.mean(axis=0)
    coef, *_ = np.linalg.lstsq(_design(Uk - centre), yk, rcond=None)
    g = coef[1:1 + q]
    H = np.zeros((q, q))
    idx = 1 + q
    for i in range(q):
        for j in range(i, q):
            H[i, j] += coef[idx] if i != j else 2 * coef[idx]
            H[j, i] = H[i, j]
            idx += 1
    if np.any(np.linalg.eigvalsh(H) <= 0):
        return U[best], "best trial", None
    u = centre - np.linalg.solve(H, g)
    lo, hi = U.min(axis=0), U.max(axis=0)
    if np.any(u < lo - 0.5 * (hi - lo)) or np.any(u > hi + 0.5 * (hi - lo)):
        return U[best], "best trial", None
    return u, "quadratic", H


def _line(x: FloatArray, Y: FloatArray) -> FloatArray:
    """Least squares ``Y (.., L) = a + b x``; returns ``(.., 2)`` of (a, b)."""
    xc = x - x.mean()
    b = (Y - Y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)
    return np.stack([Y.mean(axis=-1) - b * x.mean(), b], axis=-1)


def fit_hyperparameter_laws(
    scale: ArrayLike, loss: ArrayLike, *, lr: ArrayLike | None = None,
    batch: ArrayLike | None = None, scale_name: str = "C",
    tol_decades: float = DEFAULT_TOL_DECADES, bootstrap: int = DEFAULT_HP_BOOTSTRAP,
    level: float = DEFAULT_LEVEL, seed: int | None = 0,
) -> HyperparameterLaws:
    """Best learning rate and/or batch size per scale, power laws through them, bootstrap.

    Args:
        scale: each trial's compute (or N: say so with ``scale_name="N"``); trials within
            ``tol_decades`` of each other share a scale. Needs 2 or more scales.
        loss: each trial's loss (non-finite: a diverged trial, ignored).
        lr, batch: each trial's value of the hyperparameters searched (one or both).
        bootstrap: stratified resamples (0: no intervals). level: interval coverage.

    Raises:
        UserError: no hyperparameter column, fewer than 2 scales, or bad values.
    """
    s = np.asarray(scale, dtype=np.float64).ravel()
    y = np.asarray(loss, dtype=np.float64).ravel()
    require_positive_finite(scale_name, s)
    level = check_level(level)
    given = {n: np.asarray(v, dtype=np.float64).ravel() for n, v in (("lr", lr),
                                                                     ("batch", batch))
             if v is not None}
    if not given:
        raise UserError("hyperparameter laws need an lr column, a batch column, or both")
    for n, v in given.items():
        if v.shape != y.shape:
            raise invalid(n, f"{v.size} values", f"one per trial ({y.size})")
        require_positive_finite(n, v)
    ok = np.isfinite(y)
    s, y = s[ok], y[ok]
    U = np.log(np.stack([given[n][ok] for n in given], axis=1))  # (n, q)
    labels = group_levels(s, tol_decades)
    groups = [np.flatnonzero(labels == g) for g in range(int(labels.max()) + 1 if s.size else 0)]
    if len(groups) < MIN_SCALES:
        raise UserError(f"hyperparameter laws need trials at {MIN_SCALES} or more scales "
                        f"({scale_name}); found {len(groups)}: add trials at "
                        f"{MIN_SCALES - len(groups)} more scale(s)")
    logs = np.array([np.log(s[g]).mean() for g in groups])
    opt = [_bowl(U[g], y[g]) for g in groups]
    ustar = np.stack([u for u, _, _ in opt], axis=1)  # (q, L)
    coef = _line(logs, ustar)  # (q, 2)
    rng = np.random.default_rng(seed)
    reps = np.full((bootstrap, len(given), 2), np.nan)
    for r in range(bootstrap):
        res = [g[rng.integers(0, g.size, g.size)] for g in groups]
        reps[r] = _line(logs, np.stack([scale_optimum(U[i], y[i])[0] for i in res], axis=1))
    laws: dict[str, HPLaw] = {}
    for j, n in enumerate(given):
        optima = tuple((float(math.exp(logs[i])), float(math.exp(ustar[j, i])), opt[i][1])
                       for i in range(len(groups)))
        curv = [H[j, j] / 2 for _, _, H in opt if H is not None]
        laws[n] = HPLaw(n, scale_name, float(math.exp(coef[j, 0])), float(coef[j, 1]),
                        reps[:, j, :], level, optima,
                        curvature=float(np.median(curv)) if curv else None)
    return HyperparameterLaws(scale_name, laws.get("lr"), laws.get("batch"))


def prior_law(name: str, hp: str, anchor_scale: float, anchor_value: float, *,
              level: float = DEFAULT_LEVEL, log_sd: float = 0.0, exponent_sd: float = 0.1,
              ratio: float | None = None, samples: int = DEFAULT_HP_BOOTSTRAP) -> HPLaw:
    """A published law's exponent in ``C``, anchored at one measured scale: a named prior.

    For a law in C alone (DeepSeek) ``p`` is its exponent; for a law in N and D at a fixed
    tokens-per-parameter ratio (``ratio``), ``C = 6 N D`` with ``N, D ∝ sqrt(C)`` gives
    ``p = (e_N + e_D) / 2``. ``k`` puts the law through ``(anchor_scale, anchor_value)``. The
    replicates are Gaussian: ``ln k`` with sd ``log_sd`` (the anchor's own uncertainty) and
    ``p`` with sd ``exponent_sd`` (the stated width of the prior: published exponents differ
    by about 0.1), so the interval widens away from the anchor.
    """
    if name not in PUBLISHED:
        raise invalid("prior", name, f"one of {sorted(PUBLISHED)}")
    exps = PUBLISHED[name][hp]["exponents"]
    if set(exps) == {"C"}:
        p = float(exps["C"])
    elif ratio is not None:
        p = float(exps.get("N", 0.0) + exps.get("D", 0.0)) / 2.0
    else:
        raise invalid("ratio", None, f"a tokens-per-parameter ratio for the {name} law in N, D")
    k = anchor_value / anchor_scale**p
    rng = np.random.default_rng(0)
    ps = p + exponent_sd * rng.standard_normal(samples)
    lnk = math.log(anchor_value) + log_sd * rng.standard_normal(samples) - ps * math.log(
        anchor_scale)
    return HPLaw(hp, "C", float(k), p, np.stack([lnk, ps], axis=1), level,
                 ((anchor_scale, anchor_value, "anchor"),),
                 source=f"prior:{name} exponent {p:.3g} (sd {exponent_sd:g}; "
                        f"{PUBLISHED[name]['reference']}), anchored at C={anchor_scale:.3g}")

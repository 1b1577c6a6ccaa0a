"""Chinchilla "approach 3": the parametric fit of a law to every run, with bootstrap intervals.

Math (Hoffmann et al. 2022, arXiv:2203.15556, §3.3, Appendix D.2; Besiroglu et al. 2024,
arXiv:2404.10102, §2-3): with ``log L = LSE(a - alpha log N, b - beta log D, e)``,

    theta_hat = argmin_theta  sum_i Huber_delta( log Lhat(N_i, D_i; theta) - log L_i ).

Multi-start: the paper's 4500-point grid is evaluated at once (vectorised) and L-BFGS-B runs
from its ``n_starts`` best points (8 by default) instead of from all 4500: on simulated
Chinchilla data (sigma 0.02) the best of 150 starts never beat the best of 8 (objectives equal
to 1e-15), at 1/20 of the cost.

Bootstrap (percentile intervals, Besiroglu et al. §3): ``bootstrap`` resamples of the runs
with replacement, each refitted. A resample is a multinomial weight vector on the runs, so the
grid's objective for every resample is one matrix product; each resample starts from the
full-data optimum, plus those of its own ``bootstrap_starts - 1`` best grid points whose
objective is already below the warm start's (so a resample that moved to another basin is
caught, and one that did not costs one short L-BFGS-B run, ~10 ms). Every parameter and
every prediction gets the percentile interval of its replicates at ``level``. Note: percentile
intervals of individual parameters can under-cover when the fit is ill-conditioned (E, A and
alpha trade off); predictions at the data and at a compute-optimal target are much better
determined, and are what the coverage tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lmalloc.errors import invalid
from lmalloc.scaling.checks import require_points, require_positive_finite, require_varied
from lmalloc.scaling.estimate import (
    DEFAULT_LEVEL,
    Estimate,
    check_level,
    estimate,
    percentile_interval,
)
from lmalloc.scaling.huber import (
    DEFAULT_DELTA,
    Penalty,
    distinct_top,
    grid_point_losses,
    minimize_from,
    objective,
)
from lmalloc.scaling.laws import Law, get_law

FloatArray = NDArray[np.float64]

PARAM_CONVENTIONS = ("total", "non_embedding")


@dataclass(frozen=True)
class ExponentPrior:
    """A Gaussian prior on a law's exponents for a MAP fit (the remedy of a degenerate one).

    ``mean`` maps raw coordinates (``"alpha"``, ``"beta"``) to prior means, ``sd`` is the
    prior's stated width, ``noise`` the sd of one run's log-loss. The Huber objective / delta
    is, for residuals beyond delta, ``sum |r|``: ``b`` times the negative log-likelihood of
    Laplace residuals of scale ``b = noise * sqrt(2 / pi)`` (the mean |r| of Gaussian noise).
    Adding ``b`` times the prior's negative log-density, ``b (theta - mean)**2 / (2 sd**2)``,
    makes the minimum the posterior mode.
    """

    mean: dict[str, float]
    sd: float
    noise: float = 0.01
    source: str = "Hoffmann et al. 2022 (Chinchilla) exponents"

    def penalty(self, raw_names: tuple[str, ...]) -> Penalty:
        missing = sorted(set(self.mean) - set(raw_names))
        if missing:
            raise invalid("prior", missing, f"coordinates of the law {list(raw_names)}")
        if not (self.sd > 0 and self.noise > 0):
            raise invalid("prior sd / noise", (self.sd, self.noise), "positive numbers")
        idx = tuple(raw_names.index(n) for n in self.mean)
        b = self.noise * float(np.sqrt(2.0 / np.pi))
        return Penalty(idx, np.array(list(self.mean.values())),
                       np.full(len(idx), b / self.sd**2))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": dict(self.mean), "sd": self.sd, "noise": self.noise,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExponentPrior:
        return cls({k: float(v) for k, v in d["mean"].items()}, float(d["sd"]),
                   float(d["noise"]), str(d.get("source", "")))
DEFAULT_BOOTSTRAP = 200
MIN_POINTS = {"chinchilla": 8, "compute": 5}
"""Distinct runs a law needs: a few more than its parameter count (5 and 3)."""
MIN_POINTS_MAP = 5
"""Distinct runs a MAP fit needs: its prior pins the exponents, the data set the rest."""


@dataclass(frozen=True, eq=False)
class ParametricFit:
    """A fitted law, its bootstrap replicates and the conventions it was fitted under.

    Attributes:
        law: the form's name in :data:`lmalloc.scaling.laws.LAWS`.
        params: natural parameters by name (``E, A, B, alpha, beta`` for ``"chinchilla"``).
        theta: raw optimiser coordinates of the full-data optimum.
        samples: bootstrap replicates of the natural parameters, ``(R, p)`` (failed dropped).
        level: nominal coverage of every interval this fit reports.
        delta: the Huber threshold used.
        param_convention: what the caller's N counts, ``"total"`` or ``"non_embedding"``
            parameters; predictions and N* are in the same convention.
        flops_per_token_per_param: k in ``C = k N D`` (6 for forward + backward of a dense
            transformer, Kaplan et al. 2020 §2.1); used by compute-optimal allocation.
        n_points: runs fitted. objective: Huber/delta at the optimum.
        converged: L-BFGS-B reported success for the full-data fit.
        input_range: ``(min, max)`` of each input and of compute C among the runs.
        bootstrap_failed: resamples whose fit failed (dropped from ``samples``).
        prior: the exponent prior of a MAP fit (None: a plain fit).
    """

    law: str
    params: dict[str, float]
    theta: tuple[float, ...]
    samples: FloatArray
    level: float
    delta: float
    param_convention: str
    flops_per_token_per_param: float
    n_points: int
    objective: float
    converged: bool
    input_range: dict[str, tuple[float, float]]
    bootstrap_failed: int = 0
    seed: int | None = None
    prior: ExponentPrior | None = None

    @property
    def form(self) -> Law:
        return get_law(self.law)

    def param(self, name: str, level: float | None = None) -> Estimate:
        """One parameter with its percentile interval (``level`` defaults to the fit's)."""
        names = self.form.param_names
        if name not in names:
            raise invalid("parameter", name, f"one of {list(names)}")
        i = names.index(name)
        return estimate(self.params[name], self.samples[:, i], level or self.level)

    def estimates(self) -> dict[str, Estimate]:
        """Every parameter with its interval."""
        return {name: self.param(name) for name in self.form.param_names}

    def _x(self, inputs: tuple[ArrayLike, ...]) -> tuple[FloatArray, tuple[int, ...]]:
        if len(inputs) != len(self.form.inputs):
            raise invalid(
                "inputs", len(inputs), f"{len(self.form.inputs)} arrays {self.form.inputs}"
            )
        arrs = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for v in inputs])
        return np.stack([a.ravel() for a in arrs], axis=1), arrs[0].shape

    def predict(self, *inputs: ArrayLike) -> FloatArray:
        """Predicted loss at the inputs (``N, D`` or ``C``), broadcast; full-data parameters.

        >>> from lmalloc.scaling.simulate import simulate_runs
        >>> runs = simulate_runs(seed=0)
        >>> fit = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=20)
        >>> round(float(fit.predict(1e8, 2e9)), 2)  # true: 3.48
        3.48
        """
        x, shape = self._x(inputs)
        p = np.array([self.params[n] for n in self.form.param_names])
        return self.form.predict(p, x).reshape(shape)

    def replicates(self, *inputs: ArrayLike) -> FloatArray:
        """Predicted loss under every bootstrap replicate: ``(R, *shape)``."""
        x, shape = self._x(inputs)
        return self.form.predict(self.samples, x).reshape((-1, *shape))

    def interval(
        self, *inputs: ArrayLike, level: float | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Percentile interval ``(low, high)`` of the predicted loss at the inputs."""
        return percentile_interval(self.replicates(*inputs), check_level(level or self.level))

    def predict_estimate(self, *inputs: float) -> Estimate:
        """The predicted loss at one point, with its interval."""
        reps = self.replicates(*inputs).ravel()
        return estimate(float(self.predict(*inputs)), reps, self.level)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (laws.json); :meth:`from_dict` restores an equal fit."""
        return {
            "kind": "parametric",
            "law": self.law,
            "params": dict(self.params),
            "theta": dict(zip(self.form.raw_names, self.theta, strict=True)),
            "intervals": {k: v.to_dict() for k, v in self.estimates().items()},
            "bootstrap_samples": self.samples.tolist(),
            "level": self.level,
            "delta": self.delta,
            "param_convention": self.param_convention,
            "flops_per_token_per_param": self.flops_per_token_per_param,
            "n_points": self.n_points,
            "objective": self.objective,
            "converged": self.converged,
            "input_range": {k: list(v) for k, v in self.input_range.items()},
            "bootstrap_failed": self.bootstrap_failed,
            "seed": self.seed,
            "prior": None if self.prior is None else self.prior.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParametricFit:
        form = get_law(d["law"])
        samples = np.asarray(d["bootstrap_samples"], dtype=np.float64).reshape(
            -1, len(form.param_names)
        )
        return cls(
            law=form.name,
            params={k: float(d["params"][k]) for k in form.param_names},
            theta=tuple(float(d["theta"][k]) for k in form.raw_names),
            samples=samples,
            level=float(d["level"]),
            delta=float(d["delta"]),
            param_convention=str(d["param_convention"]),
            flops_per_token_per_param=float(d["flops_per_token_per_param"]),
            n_points=int(d["n_points"]),
            objective=float(d["objective"]),
            converged=bool(d["converged"]),
            input_range={k: (float(v[0]), float(v[1])) for k, v in d["input_range"].items()},
            bootstrap_failed=int(d.get("bootstrap_failed", 0)),
            seed=d.get("seed"),
            prior=ExponentPrior.from_dict(d["prior"]) if d.get("prior") else None,
        )


def _inputs(
    form: Law, N: ArrayLike | None, D: ArrayLike | None, C: ArrayLike | None, k: float
) -> tuple[FloatArray, dict[str, tuple[float, float]]]:
    """The law's input matrix ``(n, k)`` and the runs' ranges (including compute)."""
    cols: dict[str, FloatArray] = {}
    for name, v in (("N", N), ("D", D), ("C", C)):
        if v is not None:
            cols[name] = np.asarray(v, dtype=np.float64).ravel()
    if "C" not in cols and {"N", "D"} <= cols.keys():
        cols["C"] = k * cols["N"] * cols["D"]
    missing = [n for n in form.inputs if n not in cols]
    if missing:
        raise invalid("inputs", sorted(cols), f"the {form.name} law's inputs {list(form.inputs)}")
    for name, v in cols.items():
        require_positive_finite(name, v)
    x = np.stack([cols[n] for n in form.inputs], axis=1)
    ranges = {n: (float(v.min()), float(v.max())) for n, v in cols.items()}
    return x, ranges


def _check_fit_args(param_convention: str, k: float, delta: float, bootstrap: int) -> None:
    if param_convention not in PARAM_CONVENTIONS:
        raise invalid("param_convention", param_convention, f"one of {list(PARAM_CONVENTIONS)}")
    if not k > 0:
        raise invalid("flops_per_token_per_param", k, "a positive number (6 for C = 6ND)")
    if not delta > 0:
        raise invalid("delta", delta, "a positive Huber threshold (default 1e-3)")
    if bootstrap < 0:
        raise invalid("bootstrap", bootstrap, "a number of resamples >= 0 (200-500 typical)")


def fit_parametric(
    N: ArrayLike | None = None,
    D: ArrayLike | None = None,
    loss: ArrayLike | None = None,
    *,
    C: ArrayLike | None = None,
    law: str = "chinchilla",
    param_convention: str = "total",
    flops_per_token_per_param: float = 6.0,
    delta: float = DEFAULT_DELTA,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
    n_starts: int = 8,
    bootstrap_starts: int = 3,
    prior: ExponentPrior | None = None,
) -> ParametricFit:
    """Fit a scaling law to runs by Huber on log-loss, multi-start L-BFGS-B and bootstrap.

    See the module docstring for the math and references. ``N`` counts parameters in the
    caller's ``param_convention`` (``"total"`` or ``"non_embedding"``: Kaplan et al. 2020 use
    non-embedding, Hoffmann et al. 2022 total); ``C`` defaults to
    ``flops_per_token_per_param * N * D``. For ``law="compute"`` give ``C`` (or N and D).
    With ``prior`` the fit is MAP: the Huber objective plus the prior's penalty (see
    :class:`ExponentPrior`), in the full-data fit and in every bootstrap resample.

    Raises:
        UserError: too few distinct runs (says how many more), an input that does not vary,
            non-positive values, or a bad option.

    >>> from lmalloc.scaling.simulate import simulate_runs
    >>> runs = simulate_runs(seed=0)
    >>> fit = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=20, seed=0)
    >>> fit.param("alpha").contains(0.34), round(fit.params["E"], 1)
    (True, 1.7)
    """
    form = get_law(law)
    _check_fit_args(param_convention, flops_per_token_per_param, delta, bootstrap)
    level = check_level(level)
    x, ranges = _inputs(form, N, D, C, flops_per_token_per_param)
    y = np.asarray(loss, dtype=np.float64).ravel()
    if y.shape[0] != x.shape[0]:
        raise invalid("loss", f"{y.shape[0]} values", f"one per run ({x.shape[0]})")
    require_positive_finite("loss", y)
    # a prior pins the exponents: the coefficients then need fewer runs (and inputs at 2
    # values each); a plain fit needs a few more runs than parameters, at 3 values each
    needed, varied = ((MIN_POINTS_MAP, 2) if prior is not None
                      else (MIN_POINTS.get(form.name, 8), 3))
    require_points(np.unique(x, axis=0).shape[0], needed, f"the {law} fit")
    for i, name in enumerate(form.inputs):
        param = form.param_names[-len(form.inputs) + i]
        require_varied(name, x[:, i], param, min_distinct=varied)
    logx, logy = np.asfortranarray(np.log(x)), np.log(y)  # column-major: contiguous columns

    grid = form.init_grid()
    pen = None if prior is None else prior.penalty(form.raw_names)
    point_losses = grid_point_losses(form, grid, logx, logy, delta)  # (g, n)
    grid_pen = np.zeros(grid.shape[0]) if pen is None else pen.value(grid)
    order = np.argsort(point_losses.sum(axis=1) + grid_pen)
    best = minimize_from(
        form, distinct_top(order, grid, n_starts), logx, logy, np.ones(len(y)), delta,
        penalty=pen,
    )
    samples, failed = _bootstrap(
        form, best.theta, grid, point_losses, logx, logy, delta, bootstrap, bootstrap_starts, seed,
        pen, grid_pen,
    )
    natural = form.natural(best.theta)
    return ParametricFit(
        law=form.name,
        params={n: float(v) for n, v in zip(form.param_names, natural, strict=True)},
        theta=tuple(float(v) for v in best.theta),
        samples=samples,
        level=level,
        delta=delta,
        param_convention=param_convention,
        flops_per_token_per_param=float(flops_per_token_per_param),
        n_points=len(y),
        objective=best.value,
        converged=best.converged,
        input_range=ranges,
        bootstrap_failed=failed,
        seed=seed,
        prior=prior,
    )


def _bootstrap(
    form: Law,
    theta_hat: FloatArray,
    grid: FloatArray,
    point_losses: FloatArray,
    logx: FloatArray,
    logy: FloatArray,
    delta: float,
    resamples: int,
    starts: int,
    seed: int | None,
    pen: Penalty | None = None,
    grid_pen: FloatArray | None = None,
) -> tuple[FloatArray, int]:
    """Refit ``resamples`` multinomial reweightings of the runs; return natural replicates."""
    n = logy.shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    grid_obj = point_losses @ weights.T  # (g, R): every start's objective on every resample
    if grid_pen is not None:
        grid_obj += grid_pen[:, None]
    top = np.argsort(grid_obj, axis=0)[: max(starts - 1, 0)]  # (extra, R)
    out = np.full((resamples, theta_hat.shape[0]), np.nan)
    for r in range(resamples):
        warm, _ = objective(theta_hat, form, logx, logy, weights[r], delta, pen)
        # A grid start is worth its ~30 ms only if it already beats the warm start.
        better = [i for i in top[:, r] if grid_obj[i, r] < warm]
        x0 = np.vstack([theta_hat[None, :], grid[better]])
        try:
            out[r] = minimize_from(form, x0, logx, logy, weights[r], delta, penalty=pen).theta
        except (FloatingPointError, ValueError):  # counted as a failed resample
            continue
    ok = np.all(np.isfinite(out), axis=1)
    return form.natural(out[ok]), int((~ok).sum())

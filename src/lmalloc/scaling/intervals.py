"""The predicted loss's interval with every source of noise a run can measure, and a backtest.

**Parts.** A predicted loss ``L`` at the plan carries three measured uncertainties, each
turned into half-widths ``(below, above)`` at the same level:

* ``law``: the fit's bootstrap percentile interval (:meth:`ParametricFit.predict_estimate`);
* ``seed``: the run-to-run noise of one training, ``sd`` of log-loss measured by repeating a
  ladder point with another seed (:func:`seed_noise`); half-width ``L (e^{z sd} - 1)`` above
  and ``L (1 - e^{-z sd})`` below, ``z`` the normal quantile of the level;
* ``hyperparameters``: the learning rate (or batch) the law hands over is off by ``δ`` in log,
  ``δ ~ N(0, s²)`` with ``s`` the law's sd of ``ln h*`` at the target; near the optimum the
  loss rises by ``c δ²`` (``c`` the curvature of loss in ``ln h`` measured by the search), so
  with probability ``level`` the excess is below ``c (z s)²``: a one-sided part, above only;
* ``extrapolation``: the law's own error when it extrapolates in compute, measured inside the
  run (:func:`extrapolation_backtest`: refit without each size's longest training and predict
  it, one branch ratio — about 2× — further) and grown linearly in the log of the extrapolation
  the plan makes (``C_plan / C_top`` in units of that ratio); sd of log-loss
  ``rms · max(1, ln(C_plan / C_top) / ln(ratio))``, applied like the seed part. This is the
  model-form error the bootstrap cannot see: on the 10× checks of BENCHMARKS.md the bootstrap
  interval missed half the cells, every law pessimistic by 4–13 %, while the 2× backtest errors
  had the same sign.

**Composition.** ``low = L - sqrt(sum below²)``, ``high = L + sqrt(sum above²)``: exact for
independent Gaussian parts, an approximation otherwise (the parts are reported by name, so
the reader sees which one dominates).

**Backtest.** :func:`backtest` refits without the ladder's largest size and predicts it: the
relative error and whether each held-out point fell inside its predicted interval. It is the
run's own check of the extrapolation the plan makes (on a smaller scale: one size up, not 10×).
:func:`extrapolation_backtest` is its check in compute (one branch further at every size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from lmalloc.errors import invalid
from lmalloc.scaling.estimate import Estimate, check_level


class _Predicts(Protocol):
    def predict_estimate(self, *inputs: float) -> Estimate: ...


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + check_level(level) / 2.0))


def seed_noise(groups: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Pooled sd of one run's log-loss from groups of repeats of the same (N, D) point.

    ``sd² = sum_g sum_i (ln L_gi - mean_g)² / sum_g (n_g - 1)``; groups of one run add
    nothing. Returns ``{"sd", "dof", "groups"}`` (``sd`` None when no group repeats).

    >>> round(seed_noise([[3.0, 3.03]])["sd"], 4)
    0.007
    """
    ss, dof, used = 0.0, 0, 0
    for g in groups:
        x = np.log(np.asarray(g, dtype=np.float64))
        if x.size < 2 or not np.all(np.isfinite(x)):
            continue
        ss += float(((x - x.mean()) ** 2).sum())
        dof += x.size - 1
        used += 1
    return {"sd": math.sqrt(ss / dof) if dof else None, "dof": dof, "groups": used}


def law_part(est: Estimate) -> tuple[float, float]:
    """Half-widths of the law's bootstrap interval (0 where it has none)."""
    lo = 0.0 if math.isnan(est.low) else max(0.0, est.value - est.low)
    hi = 0.0 if math.isnan(est.high) else max(0.0, est.high - est.value)
    return lo, hi


def seed_part(loss: float, sd_log: float, level: float) -> tuple[float, float]:
    """Half-widths of one run's seed noise (``sd_log``: sd of its log-loss) at ``level``."""
    z = _z(level)
    return loss * (1.0 - math.exp(-z * sd_log)), loss * (math.exp(z * sd_log) - 1.0)


def hyperparameter_part(curvature: float, log_sd: float, level: float) -> tuple[float, float]:
    """The one-sided excess loss of a mis-set hyperparameter: ``(0, c (z s)²)``."""
    if curvature < 0 or log_sd < 0:
        raise invalid("curvature / log_sd", (curvature, log_sd), "non-negative numbers")
    return 0.0, curvature * (_z(level) * log_sd) ** 2


def extrapolation_part(loss: float, check: dict[str, Any], flops: float,
                       level: float) -> tuple[float, float]:
    """Half-widths of the law's model-form error at ``flops`` of training, from the run's
    :func:`extrapolation_backtest` (``check``): sd of log-loss = its rms error, times the
    plan's extrapolation in compute in units of the backtest's (at least one)."""
    steps = max(1.0, math.log(max(flops, 1.0) / check["c_top"]) / math.log(check["factor"]))
    return seed_part(loss, check["rms_log_error"] * steps, level)


def compose_interval(value: float, level: float,
                     parts: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The interval of ``value`` from named half-widths ``(below, above)``, in quadrature.

    >>> d = compose_interval(3.0, 0.9, {"law": (0.03, 0.04), "seed": (0.0, 0.03)})
    >>> round(d["low"], 3), round(d["high"], 3)
    (2.97, 3.05)
    """
    check_level(level)
    for name, (lo, hi) in parts.items():
        if not (lo >= 0 and hi >= 0):
            raise invalid(f"interval part {name!r}", (lo, hi), "non-negative half-widths")
    below = math.sqrt(sum(lo * lo for lo, _ in parts.values()))
    above = math.sqrt(sum(hi * hi for _, hi in parts.values()))
    return {"value": value, "low": value - below, "high": value + above, "level": level,
            "parts": {n: {"below": lo, "above": hi} for n, (lo, hi) in parts.items()},
            "method": "named half-widths at the same level, added in quadrature"}


def predicted_interval(est: Estimate, seed_sd: float | None = None,
                       hyperparameters: Sequence[tuple[str, float | None, float]] = (),
                       extrapolation: tuple[dict[str, Any], float] | None = None,
                       ) -> dict[str, Any]:
    """The plan's loss interval: the law's bootstrap, the seed noise (``seed_sd`` of log-loss,
    None when not measured), one part per handed-over hyperparameter
    ``(name, curvature, log_sd)`` (curvature None: not measured, left out and listed) and the
    law's extrapolation error ``(extrapolation_backtest result, planned FLOPs)`` (None, or a
    backtest that was not available: listed as not measured)."""
    parts = {"law": law_part(est)}
    missing = []
    if seed_sd is None:
        missing.append("seed")
    else:
        parts["seed"] = seed_part(est.value, seed_sd, est.level)
    if extrapolation is None or not extrapolation[0].get("available"):
        missing.append("extrapolation")
    else:
        parts["extrapolation"] = extrapolation_part(est.value, extrapolation[0],
                                                    extrapolation[1], est.level)
    for name, curvature, log_sd in hyperparameters:
        if curvature is None:
            missing.append(name)
        else:
            parts[name] = hyperparameter_part(curvature, log_sd, est.level)
    out = compose_interval(est.value, est.level, parts)
    out["not_measured"] = missing
    return out


def backtest(N: ArrayLike, D: ArrayLike, loss: ArrayLike,
             fit_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], _Predicts],
             min_points: int = 8) -> dict[str, Any]:
    """Fit without the largest N (``fit_fn(N, D, loss)``), predict its points, score them.

    Returns ``available`` (False with a ``reason`` when too few points or sizes remain),
    ``held_out_N``, one row per held-out point (``D``, ``actual``, ``predicted`` with its
    interval, ``error`` = predicted / actual - 1, ``inside``), the mean absolute error and
    how many fell inside.
    """
    n, d, y = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, loss))
    if not (n.shape == d.shape == y.shape):
        raise invalid("backtest inputs", (n.size, d.size, y.size), "arrays of one length")
    ok = np.isfinite(y)
    n, d, y = n[ok], d[ok], y[ok]
    sizes = np.unique(n)
    if sizes.size < 4:
        return {"available": False, "reason": f"{sizes.size} model sizes: the backtest needs "
                "4 (3 to fit, 1 to predict)"}
    held = n == sizes[-1]
    if int((~held).sum()) < min_points:
        return {"available": False, "reason": f"{int((~held).sum())} points without the "
                f"largest size: the fit needs {min_points}"}
    fit = fit_fn(n[~held], d[~held], y[~held])
    rows: list[dict[str, Any]] = []
    errors: list[float] = []
    for D_i, y_i in zip(d[held], y[held], strict=True):
        est = fit.predict_estimate(float(sizes[-1]), float(D_i))
        errors.append(est.value / float(y_i) - 1.0)
        rows.append({"D": float(D_i), "actual": float(y_i), "predicted": est.to_dict(),
                     "error": errors[-1], "inside": bool(est.contains(float(y_i)))})
    return {"available": True, "held_out_N": float(sizes[-1]), "points": rows,
            "mean_abs_error": float(np.mean(np.abs(errors))),
            "inside": sum(r["inside"] for r in rows), "of": len(rows)}


def extrapolation_backtest(N: ArrayLike, D: ArrayLike, loss: ArrayLike, C: ArrayLike,
                           fit_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], _Predicts],
                           min_points: int = 8) -> dict[str, Any]:
    """Fit without each size's longest training (``fit_fn(N, D, loss)``), predict those.

    The plan extrapolates in compute, mostly in D; this measures how wrong the law is one
    branch further at every size, in the run's own data. Returns ``available`` (False with a
    ``reason``), one row per held-out point (``N``, ``D``, ``actual``, ``predicted``,
    ``error`` = predicted / actual - 1), ``mean_error`` (its sign: pessimistic > 0),
    ``rms_log_error``, ``factor`` (the median ratio of a held-out D to the longest kept one
    of its size) and ``c_top`` (the largest training compute of the ladder, ``C``).
    """
    n, d, y, c = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, loss, C))
    if not (n.shape == d.shape == y.shape == c.shape):
        raise invalid("backtest inputs", (n.size, d.size, y.size, c.size),
                      "arrays of one length")
    ok = np.isfinite(y)
    n, d, y, c = n[ok], d[ok], y[ok], c[ok]
    held = np.zeros(n.size, dtype=bool)
    ratios = []
    for size in np.unique(n):
        idx = np.flatnonzero(n == size)
        if idx.size < 2:
            continue
        order = idx[np.argsort(d[idx])]
        held[order[-1]] = True
        ratios.append(d[order[-1]] / d[order[-2]])
    if len(ratios) < 2 or float(np.median(ratios)) <= 1.0:
        return {"available": False, "reason": f"{len(ratios)} sizes with 2+ token counts: "
                "the check needs 2"}
    if int((~held).sum()) < min_points:
        return {"available": False, "reason": f"{int((~held).sum())} points without each "
                f"size's longest training: the fit needs {min_points}"}
    fit = fit_fn(n[~held], d[~held], y[~held])
    rows = []
    for N_i, D_i, y_i in zip(n[held], d[held], y[held], strict=True):
        pred = fit.predict_estimate(float(N_i), float(D_i)).value
        rows.append({"N": float(N_i), "D": float(D_i), "actual": float(y_i),
                     "predicted": float(pred), "error": float(pred) / float(y_i) - 1.0})
    logs = np.log([r["predicted"] / r["actual"] for r in rows])
    if not np.all(np.isfinite(logs)):
        return {"available": False, "reason": "the refit predicts a non-finite loss"}
    return {"available": True, "points": rows,
            "mean_error": float(np.mean([r["error"] for r in rows])),
            "rms_log_error": float(np.sqrt(np.mean(logs ** 2))),
            "factor": float(np.median(ratios)), "c_top": float(c.max())}

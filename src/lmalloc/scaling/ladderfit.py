"""Everything the fit stage of ``lmalloc run`` writes to laws.json, from the run's own data.

One pure function, :func:`fit_ladder`, composes the pieces so that the stage itself only reads
its inputs and saves the result:

* the L(N, D) fit with the degenerate-fit remedy (:func:`~lmalloc.scaling.degeneracy.
  fit_with_remedy`), the measured seed noise as the MAP prior's noise;
* the approach-2 cross-check on the ladder's IsoFLOP branches at the target compute;
* the backtest (fit without the largest size, predict it) and its check in compute (fit
  without each size's longest training, predict those), which sizes the interval's
  extrapolation part;
* the seed noise from repeated ladder points;
* the hyperparameter laws from the search trials (when they span 2+ scales: compute, or
  the horizon D of one proxy; otherwise the entry says why not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lmalloc.errors import UserError
from lmalloc.scaling.degeneracy import DEFAULT_PRIOR, fit_with_remedy, isoflop_cross_check
from lmalloc.scaling.hyperparams import fit_hyperparameter_laws
from lmalloc.scaling.intervals import backtest, extrapolation_backtest, seed_noise
from lmalloc.scaling.parametric import MIN_POINTS, MIN_POINTS_MAP, ExponentPrior, fit_parametric


def fit_ladder(
    N: ArrayLike, D: ArrayLike, loss: ArrayLike, *, target_flops: float,
    repeats: Sequence[Sequence[float]] = (), hp_trials: Mapping[str, ArrayLike] | None = None,
    bootstrap: int = 200, seed: int | None = 0, param_convention: str = "non_embedding",
    C: ArrayLike | None = None,
) -> dict[str, Any]:
    """laws.json entries for a run: ``parametric`` (a fit object), ``degeneracy``,
    ``isoflop_check``, ``backtest``, ``extrapolation``, ``seed_noise`` and ``hyperparameters``
    (a fit object, or ``{"available": False, "reason"}``).

    Args:
        N, D, loss: the ladder's points (non-finite losses are dropped).
        target_flops: the final run's compute (for the approach-2 cross-check).
        repeats: groups of losses of the same (N, D) point trained with different seeds.
        hp_trials: the search trials, ``{"C": ..., "loss": ..., "lr": ..., "batch": ...}``
            (``lr`` and/or ``batch``; ``"D"`` in place of ``"C"``: trials of one shape at
            several horizons, the laws are then in tokens).
        C: each point's training FLOPs as counted (the ladder's IsoFLOP levels are equal in
            them); None: ``k N D``.
    """
    n, d, y = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, loss))
    c = None if C is None else np.asarray(C, dtype=np.float64).ravel()
    ok = np.isfinite(y)
    n, d, y = n[ok], d[ok], y[ok]
    c = None if c is None else c[ok]
    noise = seed_noise(repeats)
    kw: dict[str, Any] = {"bootstrap": bootstrap, "seed": seed,
                          "param_convention": param_convention}
    fit, report = fit_with_remedy(n, d, y, noise=noise["sd"], **kw)

    def refit(n_: np.ndarray, d_: np.ndarray, y_: np.ndarray) -> Any:
        """The backtest refits the way the run fitted: with the prior if it used one."""
        return fit_parametric(n_, d_, y_, prior=fit.prior, **kw)

    check_refit = "map" if fit.prior is not None else "plain"

    def refit_check(n_: np.ndarray, d_: np.ndarray, y_: np.ndarray) -> Any:
        """The check in compute refits the same way, except that a subset too small for a
        plain fit gets the prior, as :func:`fit_with_remedy` gives a whole ladder that small
        (a 4-size ladder that lost a branch keeps 7 points once each size's longest is out)."""
        nonlocal check_refit
        distinct = np.unique(np.column_stack([n_, d_]), axis=0).shape[0]
        if fit.prior is None and distinct < MIN_POINTS["chinchilla"]:
            check_refit = "map (too few points for a plain refit)"
            prior = DEFAULT_PRIOR if noise["sd"] is None else ExponentPrior(
                DEFAULT_PRIOR.mean, DEFAULT_PRIOR.sd, noise["sd"], DEFAULT_PRIOR.source)
            return fit_parametric(n_, d_, y_, prior=prior, **kw)
        return refit(n_, d_, y_)

    check = extrapolation_backtest(
        n, d, y, fit.flops_per_token_per_param * n * d if c is None else c, refit_check,
        min_points=MIN_POINTS_MAP)
    if check["available"]:
        check["refit"] = check_refit

    return {"parametric": fit, "degeneracy": report,
            "isoflop_check": isoflop_cross_check(n, d, y, fit, target_flops,
                                                 fit.flops_per_token_per_param, C=c),
            "backtest": backtest(n, d, y, refit),
            "extrapolation": check,
            "seed_noise": noise,
            "hyperparameters": _hp_laws(hp_trials, bootstrap, seed)}


def _hp_laws(trials: Mapping[str, ArrayLike] | None, bootstrap: int, seed: int | None) -> Any:
    if trials is None:
        return {"kind": "unavailable", "available": False, "reason": "no search trials given"}
    try:
        name = "D" if "D" in trials else "C"
        return fit_hyperparameter_laws(trials[name], trials["loss"], lr=trials.get("lr"),
                                       batch=trials.get("batch"), scale_name=name,
                                       bootstrap=bootstrap, seed=seed)
    except UserError as e:
        return {"kind": "unavailable", "available": False, "reason": str(e)}

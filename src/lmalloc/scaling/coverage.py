"""How often the parametric fit's bootstrap intervals cover the truth, over simulated studies.

Shared by the fast test (a few repetitions, in ``make test``) and ``bench/interval_coverage.py``
(the full study: 30 repetitions of 40 resamples, minutes of CPU), so both measure the same thing:
the predicted loss and N* at a target compute beyond the largest simulated run, and each
parameter of the law.
"""

from __future__ import annotations

import warnings

import numpy as np

from lmalloc.scaling.optimal import compute_optimal
from lmalloc.scaling.parametric import fit_parametric
from lmalloc.scaling.simulate import CHINCHILLA, chinchilla_loss, simulate_runs, true_optimum


def interval_coverage(reps: int, bootstrap: int, target: float = 1e21,
                      seed: int = 500) -> dict[str, float]:
    """Share of ``reps`` simulated studies whose interval contains the true value, for
    ``loss_opt`` and ``N_opt`` at ``target`` FLOPs and each Chinchilla parameter."""
    N_true, D_true = true_optimum(target)
    L_true = float(chinchilla_loss(np.array(N_true), np.array(D_true)))
    hits = {"loss_opt": 0, "N_opt": 0, **{k: 0 for k in CHINCHILLA}}
    for rep in range(reps):
        runs = simulate_runs(seed=seed + rep)
        fit = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=bootstrap, seed=rep)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # 33x is within range: no extrapolation warning
            opt = compute_optimal(fit, target)
        hits["loss_opt"] += opt.loss.contains(L_true)
        hits["N_opt"] += opt.N.contains(N_true)
        for name, est in fit.estimates().items():
            hits[name] += est.contains(CHINCHILLA[name])
    return {k: v / reps for k, v in hits.items()}

"""Scaling laws: fitting, intervals and compute-optimal allocation (numpy/scipy only).

Usable on anyone's CSV of runs, without torch::

    from lmalloc.scaling import read_runs, fit_parametric, compute_optimal
    runs = read_runs("runs.csv")
    fit = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=200)
    opt = compute_optimal(fit, 1e23)     # opt.N, opt.D, opt.loss: Estimate(value, low, high)

* :func:`fit_parametric` — Chinchilla approach 3 (Huber on log loss, LSE form, L-BFGS-B from a
  grid, bootstrap), for any :class:`Law` in :data:`LAWS`.
* :func:`compute_optimal` — closed-form N*, D* and loss at the optimum (Chinchilla eq. 4).
* :func:`fit_isoflop` — Chinchilla approach 2 (IsoFLOP parabolas, N*(C), D*(C) power laws).
* :func:`fit_power_law` — log-log power laws with t intervals.
* :func:`fit_hyperparameter_laws` — learning-rate and batch laws from searches at 2+ scales.

References: Hoffmann et al. 2022, arXiv:2203.15556; Besiroglu et al. 2024, arXiv:2404.10102.
"""

from __future__ import annotations

from lmalloc.scaling.checks import MAX_EXTRAPOLATION, ExtrapolationWarning
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate
from lmalloc.scaling.hyperparams import HPLaw, HyperparameterLaws, fit_hyperparameter_laws
from lmalloc.scaling.isoflop import IsoFLOPFit, IsoFLOPLevel, fit_isoflop, group_levels
from lmalloc.scaling.laws import LAWS, ChinchillaLaw, ComputeLaw, Law, get_law
from lmalloc.scaling.lawsfile import load_laws, save_laws
from lmalloc.scaling.optimal import Allocation, compute_optimal, optimal_nd
from lmalloc.scaling.parametric import ParametricFit, fit_parametric
from lmalloc.scaling.powerlaw import PowerLawFit, fit_power_law
from lmalloc.scaling.table import RunsTable, read_runs

__all__ = [
    "DEFAULT_LEVEL",
    "LAWS",
    "MAX_EXTRAPOLATION",
    "Allocation",
    "ChinchillaLaw",
    "ComputeLaw",
    "Estimate",
    "HPLaw",
    "ExtrapolationWarning",
    "HyperparameterLaws",
    "IsoFLOPFit",
    "IsoFLOPLevel",
    "Law",
    "ParametricFit",
    "PowerLawFit",
    "RunsTable",
    "compute_optimal",
    "fit_hyperparameter_laws",
    "fit_isoflop",
    "fit_parametric",
    "fit_power_law",
    "get_law",
    "group_levels",
    "load_laws",
    "optimal_nd",
    "read_runs",
    "save_laws",
]

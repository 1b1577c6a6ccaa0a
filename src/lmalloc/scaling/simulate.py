"""Synthetic runs from a known law: the ground truth the fitters are validated against.

The default is Chinchilla's published fit (Hoffmann et al. 2022, eq. 10: E = 1.69, A = 406.4,
B = 410.7, alpha = 0.34, beta = 0.28) sampled the way a real study samples it: IsoFLOP lines
(fixed compute C = 6 N D) with model sizes spread evenly in log N around each line's true
optimum, and multiplicative lognormal noise ``L * exp(sigma * z)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from lmalloc.scaling.table import RunsTable

FloatArray = NDArray[np.float64]

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. 2022's fitted parameters (eq. 10), N in total parameters."""


def chinchilla_loss(N: FloatArray, D: FloatArray, p: dict[str, float] = CHINCHILLA) -> FloatArray:
    """``E + A / N**alpha + B / D**beta`` for a parameter dict."""
    out: FloatArray = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
    return out


def true_optimum(
    C: float, p: dict[str, float] = CHINCHILLA, k: float = 6.0
) -> tuple[float, float]:
    """Exact compute-optimal ``(N, D)`` of a Chinchilla law at compute C = k N D (eq. 4)."""
    a, b = p["alpha"], p["beta"]
    G = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    return G * (C / k) ** (b / (a + b)), (C / k) ** (a / (a + b)) / G


def simulate_runs(
    seed: int = 0,
    levels: tuple[float, ...] = (3e17, 1e18, 3e18, 1e19, 3e19),
    sizes_per_level: int = 9,
    span_decades: float = 0.75,
    sigma: float = 0.01,
    params: dict[str, float] = CHINCHILLA,
    k: float = 6.0,
) -> RunsTable:
    """IsoFLOP-design runs with lognormal noise (45 runs, N ~ 1e7-1e9, D ~ 1e8-1e11 by default).

    >>> runs = simulate_runs(seed=0)
    >>> len(runs), bool(runs.N.min() > 5e6), bool(runs.N.max() < 3e9)
    (45, True, True)
    """
    rng = np.random.default_rng(seed)
    N_list, D_list, C_list = [], [], []
    for C in levels:
        n_opt, _ = true_optimum(C, params, k)
        N = n_opt * 10.0 ** np.linspace(-span_decades, span_decades, sizes_per_level)
        N_list.append(N)
        D_list.append(C / (k * N))
        C_list.append(np.full(sizes_per_level, C))
    N_all, D_all = np.concatenate(N_list), np.concatenate(D_list)
    loss = chinchilla_loss(N_all, D_all, params) * np.exp(sigma * rng.standard_normal(N_all.size))
    return RunsTable(N=N_all, D=D_all, loss=loss, C=np.concatenate(C_list), source="<simulated>")

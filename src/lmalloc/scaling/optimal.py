"""Compute-optimal N and D from a parametric fit, in closed form, with bootstrap intervals.

Minimising ``L(N, D) = E + A N**-alpha + B D**-beta`` subject to ``C = k N D`` gives
(Hoffmann et al. 2022, arXiv:2203.15556, eq. 4, written for any k; k = 6 there):

    N_opt(C) = G (C/k)**(beta/(alpha+beta)),   D_opt(C) = G**-1 (C/k)**(alpha/(alpha+beta)),
    G = (alpha A / (beta B))**(1/(alpha+beta)).

``k`` is FLOPs per token per parameter (6 = forward + backward of a dense transformer; pass
your model's ``train_flops_per_token / N`` to include attention). Each bootstrap replicate of
the fit gives its own optimum, so N*, D* and the loss there get percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import UserError, invalid
from lmalloc.scaling.checks import MAX_EXTRAPOLATION, warn_extrapolation
from lmalloc.scaling.estimate import Estimate, estimate
from lmalloc.scaling.parametric import ParametricFit

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Allocation:
    """The compute-optimal model size, token count and predicted loss at compute ``C``."""

    C: float
    N: Estimate
    D: Estimate
    loss: Estimate
    param_convention: str
    flops_per_token_per_param: float
    extrapolation: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "N": self.N.to_dict(),
            "D": self.D.to_dict(),
            "loss": self.loss.to_dict(),
            "param_convention": self.param_convention,
            "flops_per_token_per_param": self.flops_per_token_per_param,
            "extrapolation": self.extrapolation,
        }


def optimal_nd(params: FloatArray, C: float, k: float = 6.0) -> tuple[FloatArray, FloatArray]:
    """Eq. 4 for natural Chinchilla params ``(..., 5)`` = (E, A, B, alpha, beta)."""
    A, B, alpha, beta = params[..., 1], params[..., 2], params[..., 3], params[..., 4]
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    N = G * (C / k) ** (beta / (alpha + beta))
    D = (C / k) ** (alpha / (alpha + beta)) / G
    return N, D


def _loss_at(params: FloatArray, N: FloatArray, D: FloatArray) -> FloatArray:
    """Chinchilla loss for params ``(..., 5)`` at matching ``N, D`` ``(...)``."""
    E, A, B, alpha, beta = (params[..., i] for i in range(5))
    out: FloatArray = E + A * N**-alpha + B * D**-beta
    return out


def compute_optimal(
    fit: ParametricFit,
    C: float,
    flops_per_token_per_param: float | None = None,
    max_extrapolation: float = MAX_EXTRAPOLATION,
) -> Allocation:
    """N*, D* and the loss at the optimum for compute ``C``, each with its interval.

    ``flops_per_token_per_param`` defaults to the fit's. Warns with
    :class:`~lmalloc.scaling.checks.ExtrapolationWarning` when C is more than
    ``max_extrapolation``× outside the runs' compute.

    >>> from lmalloc.scaling.simulate import simulate_runs
    >>> from lmalloc.scaling.parametric import fit_parametric
    >>> runs = simulate_runs(seed=0)
    >>> fit = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=20)
    >>> opt = compute_optimal(fit, 1e21)
    >>> bool(1e9 < opt.N.value < 1e10), opt.N.low <= opt.N.value <= opt.N.high
    (True, True)
    """
    if fit.law != "chinchilla":
        raise UserError(f"compute-optimal N and D need an L(N, D) law; this fit is {fit.law!r}")
    if not (np.isfinite(C) and C > 0):
        raise invalid("target compute", C, "a positive number of FLOPs")
    k = (
        fit.flops_per_token_per_param
        if flops_per_token_per_param is None
        else flops_per_token_per_param
    )
    if not k > 0:
        raise invalid("flops_per_token_per_param", k, "a positive number (6 for C = 6ND)")
    lo, hi = fit.input_range["C"]
    factor = warn_extrapolation(C, lo, hi, limit=max_extrapolation)
    p = np.array([fit.params[n] for n in fit.form.param_names])
    # a degenerate fit (or replicate) puts N* at 0 or infinity: its interval says so, and
    # numpy's overflow warnings on the way would only reach the user's screen
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        N, D = optimal_nd(p, C, k)
        Ns, Ds = optimal_nd(fit.samples, C, k)
        loss = _loss_at(p, N, D)
        loss_s = _loss_at(fit.samples, Ns, Ds)
        N_est, D_est = estimate(float(N), Ns, fit.level), estimate(float(D), Ds, fit.level)
        loss_est = estimate(float(loss), loss_s, fit.level)
    return Allocation(
        C=float(C),
        N=N_est,
        D=D_est,
        loss=loss_est,
        param_convention=fit.param_convention,
        flops_per_token_per_param=float(k),
        extrapolation=factor,
    )

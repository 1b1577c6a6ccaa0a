"""Degenerate L(N, D) fits: how to tell, and the remedy (a MAP fit with a stated prior).

A small ladder often cannot resolve one of the two terms of
``L = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, eq. 2): the fit then sends that
term's exponent to its bound with the coefficient to 0 or infinity (``alpha = 10``,
``A = 1e49``: larger models no better anywhere in the data), and the compute-optimal N
follows the other term alone, which puts every plan at the edge of the explored sizes. That
edge is an artefact of the fit, not a preference of the law.

:func:`diagnose` names what is wrong; :func:`fit_with_remedy` refits such a table as a MAP fit
with a Gaussian prior on the exponents (:class:`~lmalloc.scaling.parametric.ExponentPrior`,
mean and width stated in its report), and cross-checks the compute-optimal N with
Chinchilla approach 2 on the ladder's IsoFLOP branches when they allow it.

>>> from lmalloc.scaling.simulate import simulate_runs
>>> runs = simulate_runs(seed=0)
>>> fit, report = fit_with_remedy(runs.N, runs.D, runs.loss, bootstrap=0)
>>> report["degenerate"], report["remedy"]
(False, None)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lmalloc.errors import UserError
from lmalloc.scaling.parametric import (
    MIN_POINTS,
    ExponentPrior,
    ParametricFit,
    fit_parametric,
)

EXPONENT_RANGE = (0.02, 2.0)
"""Sane exponents: published fits lie in 0.07-0.7; outside this range a term has vanished."""
VANISHED = 1e-3
"""A term below this share of the loss everywhere in the data has vanished (coefficient → 0)."""
DEFAULT_PRIOR = ExponentPrior({"alpha": 0.34, "beta": 0.28}, sd=0.15)
"""Chinchilla's exponents (Hoffmann et al. 2022, eq. 10) with sd 0.15: wide enough to hold
Kaplan et al.'s, Besiroglu et al.'s and Porian et al.'s fits within two sd of the mean."""


def diagnose(params: dict[str, float], input_range: dict[str, tuple[float, float]],
             ) -> list[dict[str, str]]:
    """What is degenerate about a Chinchilla fit: a list of ``{"code", "message"}``.

    Codes: ``"exponent"`` (alpha or beta outside :data:`EXPONENT_RANGE`), ``"vanished"``
    (a term below :data:`VANISHED` of the loss at every run: its coefficient went to 0),
    ``"irreducible"`` (E below 1e-3 of the loss: the floor is not identified; a note, the
    exponents can still be fine).
    """
    out: list[dict[str, str]] = []
    lo, hi = EXPONENT_RANGE
    E, A, B = params["E"], params["A"], params["B"]
    alpha, beta = params["alpha"], params["beta"]
    (n_lo, n_hi), (d_lo, d_hi) = input_range["N"], input_range["D"]
    for name, v, term in (("alpha", alpha, "model size"), ("beta", beta, "training tokens")):
        if not lo <= v <= hi:
            out.append({"code": "exponent", "message":
                        f"{name} = {v:.3g} is outside [{lo}, {hi}]: the ladder did not resolve "
                        f"the effect of {term}"})
    n_term, d_term = A * n_lo**-alpha, B * d_lo**-beta  # each term's largest value in the data
    loss_hi = E + n_term + d_term
    for coef, term, what in (("A", n_term, "model size"), ("B", d_term, "training tokens")):
        if term < VANISHED * loss_hi:
            out.append({"code": "vanished", "message":
                        f"the {what} term ({coef}) is below {VANISHED:g} of the loss at every "
                        "run: the fit sees no effect of it"})
    if E < 1e-3 * (E + A * n_hi**-alpha + B * d_hi**-beta):
        out.append({"code": "irreducible", "message":
                    f"E = {E:.3g}: the irreducible loss is not identified by these runs"})
    return out


def is_degenerate(problems: list[dict[str, str]]) -> bool:
    """Whether the problems call for the remedy (a bad exponent or a vanished term)."""
    return any(p["code"] in ("exponent", "vanished") for p in problems)


def fit_with_remedy(
    N: ArrayLike, D: ArrayLike, loss: ArrayLike, *, prior: ExponentPrior = DEFAULT_PRIOR,
    noise: float | None = None, **fit_kw: Any,
) -> tuple[ParametricFit, dict[str, Any]]:
    """The plain approach-3 fit, or, when it is degenerate, the MAP fit under ``prior``.

    ``noise`` (the measured sd of one run's log-loss, e.g. from a repeated ladder point)
    replaces the prior's default. The report says whether the plain fit was degenerate and
    why, the remedy taken (``"map"`` or None), the prior (mean, width, noise, source), the
    plain fit's parameters and what is still wrong after the remedy.
    """
    distinct = np.unique(np.column_stack([np.ravel(N), np.ravel(D)]), axis=0).shape[0]
    if distinct < MIN_POINTS["chinchilla"]:  # too few for a plain fit: the prior must carry it
        problems = [{"code": "too_few", "message":
                     f"{distinct} distinct runs, fewer than the {MIN_POINTS['chinchilla']} a "
                     "plain fit needs (the ladder lost points to hold its share)"}]
        report: dict[str, Any] = {"degenerate": True, "problems": problems, "remedy": None,
                                  "prior": None, "plain_params": None}
    else:
        plain = fit_parametric(N, D, loss, **fit_kw)
        problems = diagnose(plain.params, plain.input_range)
        report = {"degenerate": is_degenerate(problems), "problems": problems,
                  "remedy": None, "prior": None, "plain_params": plain.params}
        if not report["degenerate"]:
            return plain, report
    if noise is not None:
        prior = ExponentPrior(prior.mean, prior.sd, noise, prior.source)
    fit = fit_parametric(N, D, loss, prior=prior, **fit_kw)
    after = diagnose(fit.params, fit.input_range)
    report.update(remedy="map", prior=prior.to_dict(), problems_after=after,
                  degenerate_after=is_degenerate(after))
    return fit, report


def isoflop_cross_check(N: ArrayLike, D: ArrayLike, loss: ArrayLike, fit: ParametricFit,
                        target_flops: float, k: float = 6.0) -> dict[str, Any] | None:
    """Chinchilla approach 2 on the ladder's branches (each branch fraction is an IsoFLOP
    level): ``N*(target)`` from the IsoFLOP power law beside the fit's, or None when the
    branches do not form 3 levels of 3 sizes with a minimum inside."""
    from lmalloc.scaling.isoflop import fit_isoflop
    from lmalloc.scaling.optimal import compute_optimal

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iso = fit_isoflop(N, loss, D=D, bootstrap=0, flops_per_token_per_param=k)
            n_fit = compute_optimal(fit, target_flops).N.value
    except UserError as e:
        return {"available": False, "reason": str(e)}
    n_iso = float(iso.k_N * target_flops**iso.a)
    return {"available": True, "N_opt_isoflop": n_iso, "N_opt_fit": float(n_fit),
            "ratio": float(n_fit / n_iso), "a": float(iso.a)}

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


def isoflop_levels(N: ArrayLike, loss: ArrayLike, C: ArrayLike) -> list[dict[str, Any]]:
    """Where each IsoFLOP level of the ladder has its lowest loss: per level of 3+ sizes
    (runs grouped by compute as the IsoFLOP fit groups them) its compute, sizes, best N and
    whether that is the ``"smallest"``, the ``"largest"`` or a size ``"inside"``."""
    from lmalloc.scaling.isoflop import group_levels

    n, y, c = (np.asarray(v, dtype=np.float64).ravel() for v in (N, loss, C))
    labels = group_levels(c)
    out = []
    for lv in np.unique(labels):
        m = labels == lv
        sizes = np.unique(n[m])
        if sizes.size < 3:
            continue
        best = float(n[m][int(np.argmin(y[m]))])
        at = ("smallest" if best == sizes[0] else "largest" if best == sizes[-1]
              else "inside")
        out.append({"C": float(np.median(c[m])), "sizes": int(sizes.size), "best_N": best,
                    "at": at})
    return out


def data_preference(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The size the ladder's own measurements prefer, when they agree: at every IsoFLOP level
    (at least 2) the lowest loss was at the same edge (``"smallest"``/``"largest"``: the
    optimum lies at or beyond it) or at the same inside size. ``{"at", "N"}`` with the top
    level's best N; None when the levels disagree."""
    if len(levels) < 2:
        return None
    ats = {lv["at"] for lv in levels}
    if len(ats) != 1 or (ats == {"inside"} and len({lv["best_N"] for lv in levels}) != 1):
        return None
    top = max(levels, key=lambda lv: lv["C"])
    return {"at": top["at"], "N": float(top["best_N"])}


def isoflop_cross_check(N: ArrayLike, D: ArrayLike, loss: ArrayLike, fit: ParametricFit,
                        target_flops: float, k: float = 6.0, C: ArrayLike | None = None,
                        ) -> dict[str, Any]:
    """Chinchilla approach 2 on the ladder's branches (each branch fraction is an IsoFLOP
    level): ``N*(target)`` from the IsoFLOP power law ``N* = k_N C^a`` beside the fit's,
    when the branches form 3 levels of 3 sizes with a minimum inside; and, always, where each
    level's lowest loss lies (:func:`isoflop_levels`, :func:`data_preference`).

    ``C`` is each run's compute as the ladder counted it (its exact training FLOPs: the
    ladder's levels are equal in those, not in ``k N D``); without it ``C = k N D``."""
    from lmalloc.scaling.isoflop import fit_isoflop
    from lmalloc.scaling.optimal import compute_optimal

    c = (k * np.asarray(N, dtype=np.float64) * np.asarray(D, dtype=np.float64)
         if C is None else np.asarray(C, dtype=np.float64))
    levels = isoflop_levels(N, loss, c)
    out: dict[str, Any] = {"levels": levels, "data_prefer": data_preference(levels),
                           "compute": "k N D" if C is None else "measured FLOPs"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iso = fit_isoflop(N, loss, C=c, bootstrap=0, flops_per_token_per_param=k)
            n_fit = compute_optimal(fit, target_flops).N.value
    except UserError as e:
        return {**out, "available": False, "reason": str(e)}
    n_iso = float(iso.k_N * target_flops**iso.a)
    return {**out, "available": True, "N_opt_isoflop": n_iso, "N_opt_fit": float(n_fit),
            "ratio": float(n_fit / n_iso), "a": float(iso.a), "k_N": float(iso.k_N)}


def size_rule(laws: dict[str, Any]) -> dict[str, Any]:
    """Where a plan's model size comes from, given a run's laws.json entries: ``{"source",
    "why"}`` (and approach 2's ``k_N``, ``a``).

    * ``"law"``: the L(N, D) fit is sound (or the remedy made it so): its optimum.
    * ``"approach 2"``: the fit is still degenerate, and the ladder's IsoFLOP branches have
      minima inside the sizes: ``N* = k_N C^a`` from them.
    * ``"data: smallest"`` / ``"data: largest"`` / ``"data: best size"``: still degenerate,
      and at every IsoFLOP level the ladder's smallest (largest, or one same inside) size had
      the lowest loss: the plan takes that size (``N``), which the measurements prefer, not an
      artefact of an exponent at its bound.
    * ``"degenerate law"``: nothing resolves the size; the plan says so.
    """
    deg = laws.get("degeneracy") or {}
    if not deg.get("degenerate") or (deg.get("remedy") and not deg.get("degenerate_after")):
        return {"source": "law", "why": "the L(N, D) fit's optimum"}
    iso = laws.get("isoflop_check") or {}
    if iso.get("available") and iso.get("k_N"):
        return {"source": "approach 2", "k_N": float(iso["k_N"]), "a": float(iso["a"]),
                "why": "the L(N, D) fit is degenerate in N; the ladder's IsoFLOP branches "
                       "have their minima inside the explored sizes (Chinchilla approach 2)"}
    pref = iso.get("data_prefer") or {}
    why = ("the L(N, D) fit does not resolve N, but at every IsoFLOP level of the ladder the "
           "{} had the lowest loss")
    if pref.get("at") == "smallest":
        return {"source": "data: smallest", "N": pref["N"], "why": why.format(
            "smallest size") + ": the plan at the ladder's floor is what the measurements "
            "prefer (a smaller model may be better still: lower --min-params)"}
    if pref.get("at") == "largest":
        return {"source": "data: largest", "N": pref["N"], "why": why.format(
            "largest size") + ": the optimum lies above the explored sizes"}
    if pref.get("at") == "inside":
        return {"source": "data: best size", "N": pref["N"], "why": why.format(
            f"same size (N = {pref['N']:,.0f})") + ": the plan takes it (no law carries it "
            "to the final run's compute, where the optimum is likely larger)"}
    return {"source": "degenerate law", "why": (
        "neither the L(N, D) fit nor the ladder's IsoFLOP branches resolve the best size: "
        "the plan's N rests on a degenerate fit")}

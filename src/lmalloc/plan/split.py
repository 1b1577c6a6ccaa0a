"""How much of the budget to spend exploring, and how much on the final run.

**Rule.** For each candidate explore fraction ``f`` (default 0.1, 0.15, ..., 0.6) of the budget
``B``:

* ``f·B`` is the exploration budget; a fixed share ``search_share`` of it (default 1/4) goes to
  the small-scale hyperparameter search, the rest to the scaling ladder
  (:func:`~lmalloc.plan.ladder.design_ladder`);
* the final run gets ``C_final = final_flops((1 - f)·B)`` FLOPs;
* the expected final loss is

      E[L] = L*(C_final) + ½ · kappa · sd²,

  where ``L*`` is the prior law's loss at the compute-optimal point, ``sd`` the ladder's
  predicted sd of ``log N*(C_final)`` and ``kappa = d²L / d(log N)²`` along the IsoFLOP line at
  ``C_final``, at the optimum (a second-order expansion: missing the optimum by a factor
  ``e^δ`` in N costs ``½ kappa δ²``, and ``E[δ²] = sd²``). For the Chinchilla form
  ``L(N, C/(kN)) = E + A N^-alpha + B (kN/C)^beta``, so exactly
  ``kappa = alpha² A N*^-alpha + beta² B D*^-beta``.

The ``f`` of least expected loss wins. Exploring more makes the final run smaller (``L*``
rises) but its size better chosen (``sd`` falls): the rule balances the two.

**How it behaves.** The IsoFLOP bowl is flat (``kappa`` is small), so once a ladder with three
sizes is affordable the second term rarely outweighs the first: in practice the rule picks the
smallest fraction whose ladder is feasible (0.1 at 1e15 and 1e18 FLOPs with noise 0.01; 0.3 for
the default 15-minute CPU run, where the ladder's minimum model size binds), and only noisier
runs (noise 0.1) move it up. The rule prices only the misplacement of N*, not a wrong prior or
the search's payoff; both would argue for exploring more.

**Why a fixed search share.** The search tunes the learning rate and warmup on the ladder's
smallest (μP proxy) model; its payoff (how much a better learning rate lowers the final loss)
has no model comparable to the ladder's Fisher information, so optimising its share would
optimise a guess. A quarter of the exploration buys a few dozen proxy trials for any
budget, which is what TPE-style searches over two hyperparameters need; the share is an
argument for users who know better.

>>> sp = choose_split(1e14, lambda cfg, t: 6.0 * 2e5 * t, lambda b: b, 512, 128, 1024)
>>> 0.1 <= sp.explore_fraction <= 0.6
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmalloc.errors import invalid
from lmalloc.plan.ladder import (
    CostFn,
    Ladder,
    LadderBudgetError,
    LawLike,
    design_ladder,
    law_params,
)
from lmalloc.scaling.laws import ChinchillaLaw
from lmalloc.scaling.optimal import optimal_nd
from lmalloc.scaling.parametric import ParametricFit

DEFAULT_FRACTIONS = tuple(round(0.1 + 0.05 * i, 2) for i in range(11))  # 0.1 .. 0.6
DEFAULT_SEARCH_SHARE = 0.25


@dataclass(frozen=True)
class Split:
    """The chosen explore fraction, the budgets it implies and the table it was chosen from."""

    explore_fraction: float
    search_budget: float
    ladder_budget: float
    final_budget: float
    final_flops: float
    expected_loss: float
    ladder: Ladder
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"explore_fraction": self.explore_fraction, "search_budget": self.search_budget,
                "ladder_budget": self.ladder_budget, "final_budget": self.final_budget,
                "final_flops": self.final_flops, "expected_loss": self.expected_loss,
                "ladder": self.ladder.to_dict(), "table": list(self.table)}


def optimum_loss_and_curvature(params: np.ndarray, C: float, k: float = 6.0,
                               ) -> tuple[float, float]:
    """``L*(C)`` and ``kappa = d²L / d(log N)²`` along the IsoFLOP line at the optimum."""
    N, D = (float(v) for v in optimal_nd(params, C, k))
    E, A, B, alpha, beta = (float(v) for v in params)
    loss = float(ChinchillaLaw().predict(params, np.array([[N, D]]))[0])
    return loss, alpha**2 * A * N**-alpha + beta**2 * B * D**-beta


def _check(budget: float, fractions: Sequence[float], search_share: float) -> None:
    if not (math.isfinite(budget) and budget > 0):
        raise invalid("budget", budget, "a positive, finite amount (FLOPs or seconds)")
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise invalid("fractions", tuple(fractions), "explore fractions in (0, 1)")
    if not 0 <= search_share < 1:
        raise invalid("search_share", search_share, "a fraction in [0, 1)")


def choose_split(
    budget: float, cost_fn: CostFn, final_flops: Callable[[float], float], vocab_size: int,
    seq_len: int, batch_tokens: int, *, law: LawLike = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    search_share: float = DEFAULT_SEARCH_SHARE, **ladder_kw: Any,
) -> Split:
    """The explore fraction of least expected final loss (see the module docstring).

    Args:
        budget: the whole budget, in ``cost_fn``'s unit (FLOPs or seconds).
        cost_fn: ``cost_fn(cfg, tokens)`` in budget units (passed to the ladder design).
        final_flops: converts the final run's budget (same unit) to its training FLOPs.
        vocab_size, seq_len, batch_tokens: as for :func:`~lmalloc.plan.ladder.design_ladder`.
        law: the law assumed (None: the prior). fractions: the explore fractions tried.
        search_share: share of the exploration budget for the hyperparameter search.
        **ladder_kw: passed to :func:`~lmalloc.plan.ladder.design_ladder`.

    Raises:
        UserError: a bad argument; LadderBudgetError (a UserError): no fraction leaves
            room for a ladder (``needed``: the whole budget it would take).
    """
    _check(budget, fractions, search_share)
    params = law_params(law)
    k = law.flops_per_token_per_param if isinstance(law, ParametricFit) else 6.0
    rows: list[dict[str, Any]] = []
    best: tuple[float, float, Ladder, float] | None = None
    for f in sorted(fractions):
        explore, final_budget = f * budget, (1.0 - f) * budget
        C_final = float(final_flops(final_budget))
        row: dict[str, Any] = {"explore_fraction": f, "search_budget": search_share * explore,
                               "ladder_budget": (1 - search_share) * explore,
                               "final_budget": final_budget, "final_flops": C_final}
        rows.append(row)
        try:
            lad = design_ladder((1 - search_share) * explore, cost_fn, C_final, vocab_size,
                                seq_len, batch_tokens, law=law, **ladder_kw)
        except LadderBudgetError as e:
            row.update(feasible=False, reason=str(e), ladder_needs=e.needed)
            continue
        loss, kappa = optimum_loss_and_curvature(params, C_final, k)
        expected = loss + 0.5 * kappa * lad.sd_log_n_opt**2
        row.update(feasible=True, loss_at_optimum=loss, curvature=kappa,
                   sd_log_n_opt=lad.sd_log_n_opt, expected_loss=expected)
        if best is None or expected < best[1]:
            best = (f, expected, lad, C_final)
    if best is None:
        f_max = max(fractions)
        need = rows[-1]["ladder_needs"] / ((1 - search_share) * f_max)
        raise LadderBudgetError(
            f"budget too small for exploration plus a final run: {budget:.3g} given, but even "
            f"at explore fraction {f_max} the scaling ladder gets "
            f"{(1 - search_share) * f_max * budget:.3g} and needs "
            f"{rows[-1]['ladder_needs']:.3g}; the whole budget needs at least {need:.3g}", need)
    f, expected, lad, C_final = best
    return Split(explore_fraction=f, search_budget=search_share * f * budget,
                 ladder_budget=(1 - search_share) * f * budget,
                 final_budget=(1 - f) * budget, final_flops=C_final, expected_loss=expected,
                 ladder=lad, table=rows)



def choose_split_lowering_floor(
    budget: float, cost_fn: CostFn, final_flops: Callable[[float], float], vocab_size: int,
    seq_len: int, batch_tokens: int, *, min_params: float, halvings: int = 2, **kw: Any,
) -> tuple[Split, float]:
    """:func:`choose_split`, halving the ladder's smallest model size ``min_params`` up to
    ``halvings`` times when the budget cannot pay for a ladder above it (a slow or busy
    machine under a time budget); returns the split and the floor it used."""
    floor = min_params
    for attempt in range(halvings + 1):
        try:
            return choose_split(budget, cost_fn, final_flops, vocab_size, seq_len, batch_tokens,
                                min_params=floor, **kw), floor
        except LadderBudgetError:
            if attempt == halvings:
                raise
            floor /= 2
    raise AssertionError("unreachable")

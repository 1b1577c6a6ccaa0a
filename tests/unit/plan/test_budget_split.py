"""The explore/final split: a fraction in range, chosen at the table's minimum, budgets that
add up, monotone in the total budget, and a clear error when nothing fits."""

from __future__ import annotations

import pytest

from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig
from lmalloc.plan.ladder import law_params
from lmalloc.plan.split import Split, choose_split, optimum_loss_and_curvature

VOCAB, SEQ, BATCH = 512, 128, 1024
FRACTIONS = (0.1, 0.2, 0.3, 0.45, 0.6)


def flops_cost(cfg: GPTConfig, tokens: float) -> float:
    return 6.0 * param_count(cfg, non_embedding=True) * tokens


def split(budget: float, **kw: object) -> Split:
    return choose_split(budget, flops_cost, lambda b: b, VOCAB, SEQ, BATCH,  # type: ignore[arg-type]
                        fractions=FRACTIONS, **kw)


@pytest.fixture(scope="module")
def sp() -> Split:
    return split(1e15)


def test_fraction_in_range_and_budgets_add_up(sp: Split) -> None:
    assert sp.explore_fraction in FRACTIONS
    total = sp.search_budget + sp.ladder_budget + sp.final_budget
    assert total == pytest.approx(1e15)
    assert sp.search_budget == pytest.approx(0.25 * (sp.search_budget + sp.ladder_budget))
    assert sp.ladder.total_cost <= sp.ladder_budget
    assert sp.final_flops == pytest.approx(sp.final_budget)
    assert sp.ladder.target_flops == pytest.approx(sp.final_flops)


def test_chosen_fraction_is_the_table_minimum(sp: Split) -> None:
    rows = [r for r in sp.table if r["feasible"]]
    assert len(rows) == len(FRACTIONS)
    best = min(rows, key=lambda r: r["expected_loss"])
    assert best["explore_fraction"] == sp.explore_fraction
    assert best["expected_loss"] == pytest.approx(sp.expected_loss)
    for r in rows:  # E[L] = L* + kappa sd^2 / 2, with a positive curvature
        assert r["curvature"] > 0
        assert r["expected_loss"] == pytest.approx(
            r["loss_at_optimum"] + 0.5 * r["curvature"] * r["sd_log_n_opt"] ** 2)
    # more exploration buys a sharper optimum for a smaller final run
    sds = [r["sd_log_n_opt"] for r in rows]
    assert sds[0] > sds[-1]


def test_curvature_matches_a_numerical_second_derivative() -> None:
    import math

    import numpy as np

    from lmalloc.scaling.optimal import optimal_nd

    p, C = law_params(None), 1e18
    _, kappa = optimum_loss_and_curvature(p, C)
    n_star = float(optimal_nd(p, C)[0])

    def iso(log_n: float) -> float:
        N = math.exp(log_n)
        return float(p[0] + p[1] * N ** -p[3] + p[2] * (C / (6 * N)) ** -p[4])

    h, x = 1e-3, math.log(n_star)
    num = (iso(x + h) - 2 * iso(x) + iso(x - h)) / h**2
    assert kappa == pytest.approx(num, rel=1e-4)
    assert iso(x) < iso(x + 0.1) and iso(x) < iso(x - 0.1)
    assert np.isfinite(kappa)


def test_larger_budget_never_shrinks_the_ladder(sp: Split) -> None:
    bigger = split(1e16)
    assert bigger.ladder_budget >= sp.ladder_budget
    assert bigger.final_flops > sp.final_flops


def test_too_small_budget_says_what_it_needs() -> None:
    with pytest.raises(UserError, match="needs at least") as info:
        split(1e10)
    assert "exploration plus a final run" in str(info.value)
    need = float(str(info.value).rsplit("at least ", 1)[1])
    assert need > 1e10
    assert split(need * 1.01).explore_fraction == max(FRACTIONS)  # only the largest fits


@pytest.mark.parametrize("kw", [{"search_share": 1.0}, {"fractions": (0.0, 0.5)}])
def test_bad_arguments_are_user_errors(kw: dict[str, object]) -> None:
    with pytest.raises(UserError):
        choose_split(1e15, flops_cost, lambda b: b, VOCAB, SEQ, BATCH, **kw)  # type: ignore[arg-type]


def test_a_too_tight_budget_lowers_the_ladder_floor_before_failing() -> None:
    """A budget just short of a ladder of >= 1e5-parameter models gets one of >= 5e4 (what
    keeps the default `lmalloc run` alive on a slow or busy machine); far too small still fails
    with the whole budget it would take."""
    from lmalloc.plan.ladder import LadderBudgetError
    from lmalloc.plan.split import choose_split_lowering_floor

    def run(budget: float, halvings: int) -> tuple[Split, float]:
        return choose_split_lowering_floor(
            budget, flops_cost, lambda b: b, VOCAB, SEQ, BATCH,  # type: ignore[arg-type]
            fractions=FRACTIONS, min_params=1e5, halvings=halvings)

    with pytest.raises(LadderBudgetError) as exc:
        run(1e10, halvings=0)
    need = exc.value.needed  # the whole budget a 1e5 floor takes
    sp, floor = run(0.9 * need, halvings=2)
    assert floor < 1e5 and sp.ladder.total_cost <= sp.ladder_budget
    assert min(r.N for r in sp.ladder.runs) >= floor
    _, floor_ok = run(1.05 * need, halvings=2)
    assert floor_ok == 1e5  # no lowering when the default floor fits
    with pytest.raises(LadderBudgetError):
        run(1e6, halvings=2)

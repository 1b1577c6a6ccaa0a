"""The scaling-ladder design: it fits its budget, brackets the prior optimum, gets sharper
with more budget, keeps its token counts consistent, and its Fisher sd matches refits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig
from lmalloc.plan.ladder import PRIOR, Ladder, design_ladder, law_params
from lmalloc.scaling.optimal import optimal_nd
from lmalloc.scaling.parametric import fit_parametric
from lmalloc.scaling.simulate import chinchilla_loss

VOCAB, SEQ, BATCH = 512, 128, 1024


def flops_cost(cfg: GPTConfig, tokens: float) -> float:
    return 6.0 * param_count(cfg, non_embedding=True) * tokens


def design(budget: float, target: float = 1e16, **kw: object) -> Ladder:
    return design_ladder(budget, flops_cost, target, VOCAB, SEQ, BATCH, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ladder() -> Ladder:
    return design(1e14)


def test_fits_budget_and_uses_most_of_it(ladder: Ladder) -> None:
    assert 0.8 * 1e14 <= ladder.total_cost <= 1e14
    assert ladder.total_cost == pytest.approx(sum(r.cost for r in ladder.runs))
    for r in ladder.runs:  # each size's cost is the stable run plus its cooldowns
        cfg = GPTConfig.from_dict(r.model)
        want = flops_cost(cfg, r.stable_tokens) + sum(
            flops_cost(cfg, b.cooldown_tokens) for b in r.branches)
        assert r.cost == pytest.approx(want)
        assert r.N == param_count(cfg, non_embedding=True)


def test_sizes_bracket_the_prior_optimum(ladder: Ladder) -> None:
    n_star = float(optimal_nd(law_params(None), ladder.top_flops)[0])
    Ns = sorted(r.N for r in ladder.runs)
    assert len(Ns) in (4, 5, 6) and len(set(Ns)) == len(Ns)
    assert Ns[0] < n_star < Ns[-1]
    assert 8.0 * 0.999 <= Ns[-1] / Ns[0] <= 48.0  # spreads 8..32, up to shape rounding


def test_branch_tokens_are_consistent(ladder: Ladder) -> None:
    for r in ladder.runs:
        assert r.stable_tokens == max(b.snapshot_tokens for b in r.branches)
        for b in r.branches:
            assert b.snapshot_tokens + b.cooldown_tokens == b.tokens
            for t in (b.tokens, b.snapshot_tokens, b.cooldown_tokens):
                assert t % BATCH == 0 and t >= BATCH
            assert b.snapshot_tokens <= r.stable_tokens
        # the longest branch is the size's IsoFLOP point: D_i = C_top / FLOPs per token
        top = max(b.tokens for b in r.branches)
        fracs = sorted(b.tokens / top for b in r.branches)
        assert fracs == pytest.approx([0.25, 0.5, 1.0], abs=0.02)


def test_more_budget_gives_a_sharper_optimum() -> None:
    sds = [design(b).sd_log_n_opt for b in (1e13, 1e14, 1e15)]
    assert sds[0] > sds[1] > sds[2] > 0


def test_too_small_budget_says_what_it_needs() -> None:
    with pytest.raises(UserError, match="needs at least") as info:
        design(1e9)
    needed = info.value.needed  # type: ignore[attr-defined]
    assert needed > 1e9
    lad = design(needed * 1.001)  # the amount it named is enough
    assert lad.total_cost <= needed * 1.001
    assert min(r.N for r in lad.runs) >= 1e5


def test_identifiable_at_every_budget_it_accepts() -> None:
    """From the smallest budget it accepts up: 4+ sizes over 8x+, several branches each."""
    from lmalloc.plan.ladder import MIN_BRANCH_STEPS, LadderBudgetError

    with pytest.raises(LadderBudgetError) as info:
        design(1e9)
    needed = info.value.needed
    for budget in needed * np.array([1.001, 1.5, 3.0, 10.0, 100.0, 1e3]):
        lad = design(float(budget))
        Ns = sorted(r.N for r in lad.runs)
        assert len(Ns) >= 4 and Ns[-1] / Ns[0] >= 8.0 * 0.999, (budget, Ns)
        assert lad.total_cost <= budget
        for r in lad.runs:
            assert len(r.branches) >= 2
            assert min(b.cooldown_tokens + b.snapshot_tokens for b in r.branches) >= (
                MIN_BRANCH_STEPS * BATCH)


def test_a_tight_budget_spends_less_per_size() -> None:
    """Just above the refusal the sizes train fewer tokens than the prior's optimum."""
    from lmalloc.plan.ladder import LadderBudgetError

    with pytest.raises(LadderBudgetError) as info:
        design(1e9)
    lad = design(info.value.needed * 1.001)
    n_star = float(optimal_nd(law_params(None), lad.top_flops)[0])
    Ns = [r.N for r in lad.runs]
    # C_top is well below the compute-optimal one of the design's middle size
    assert n_star < math.sqrt(min(Ns) * max(Ns)) / 2


def test_round_trip_and_prior_dict_equals_default(ladder: Ladder) -> None:
    assert Ladder.from_dict(ladder.to_dict()) == ladder
    assert design(1e14, law=dict(PRIOR)) == ladder


@pytest.mark.parametrize("kw", [{"noise": 0.0}, {"fractions": (0.5, 1.5)},
                                {"sizes": (3,)}, {"spreads": (4.0,)}, {"cooldown_frac": 1.0}])
def test_bad_arguments_are_user_errors(kw: dict[str, object]) -> None:
    with pytest.raises(UserError):
        design(1e14, **kw)


@pytest.mark.slow
def test_fisher_sd_agrees_with_refits() -> None:
    """Simulate noisy losses from the prior at the design's points, refit 16 times."""
    target = 1e16
    lad = design(1e15, target)
    N, D = lad.points()
    rng = np.random.default_rng(0)
    logs = []
    for _ in range(16):
        y = chinchilla_loss(N, D) * np.exp(0.01 * rng.standard_normal(N.size))
        fit = fit_parametric(N, D, y, bootstrap=0, seed=0, param_convention="non_embedding")
        p = np.array([fit.params[n] for n in ("E", "A", "B", "alpha", "beta")])
        logs.append(math.log(float(optimal_nd(p, target)[0])))
    true = math.log(float(optimal_nd(law_params(None), target)[0]))
    rms = float(np.sqrt(np.mean((np.asarray(logs) - true) ** 2)))
    assert lad.sd_log_n_opt / 2 < rms < lad.sd_log_n_opt * 2


def test_fisher_sd_matches_map_refits_fast(ladder: Ladder) -> None:
    """The linearisation itself: 80 MAP refits (least squares on log-loss plus the prior's
    pseudo-residuals, started at the truth) spread log N* as the Fisher sd says."""
    from scipy.optimize import least_squares

    from lmalloc.plan.ladder import PRIOR_SD
    from lmalloc.scaling.laws import ChinchillaLaw

    law, target = ChinchillaLaw(), ladder.target_flops
    p0 = law_params(None)
    theta0 = np.array([math.log(p0[1]), math.log(p0[2]), math.log(p0[0]), p0[3], p0[4]])
    N, D = ladder.points()
    logx = np.log(np.stack([N, D], axis=1))
    clean = law.log_predict(theta0, logx)
    rng = np.random.default_rng(1)
    logs = []
    for _ in range(80):
        y = clean + 0.01 * rng.standard_normal(clean.size)
        res = least_squares(lambda t, y=y: np.concatenate(
            [(law.log_predict(t, logx) - y) / 0.01, (t - theta0) / PRIOR_SD]), theta0)
        logs.append(math.log(float(optimal_nd(law.natural(res.x), target)[0])))
    sd = float(np.std(logs))
    assert ladder.sd_log_n_opt / 1.3 < sd < ladder.sd_log_n_opt * 1.3

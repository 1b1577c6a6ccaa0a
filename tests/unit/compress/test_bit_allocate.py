from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _compressdata import VOCAB, tiny_model

from lmalloc.compress.allocate import (
    Problem,
    dominated,
    measure_sensitivity,
    pareto,
    proxy_sensitivity,
    solve_greedy,
    solve_milp,
    spearman,
)
from lmalloc.compress.quantize import quantizable_layers
from lmalloc.errors import UserError


def _problem(cost: list[list[float]], nbytes: list[list[int]], fixed: int = 0) -> Problem:
    c = np.array(cost, dtype=float)
    return Problem([f"l{i}" for i in range(len(c))], [f"f{j}" for j in range(c.shape[1])],
                   c, np.array(nbytes), fixed)


def test_milp_beats_greedy_where_greedy_is_myopic() -> None:
    # formats: [small, big]; greedy first takes layer 0's upgrade (best ratio 10/1), after
    # which layer 1's (gain 90 for 10 bytes) no longer fits; the optimum upgrades layer 1.
    p = _problem([[10.0, 0.0], [90.0, 0.0]], [[0, 1], [0, 10]])
    budget = 10
    g, m = solve_greedy(p, budget), solve_milp(p, budget)
    assert p.total(m) == (10.0, 10) and p.total(g)[0] == 90.0
    assert p.total(m)[0] < p.total(g)[0]


def test_milp_equals_brute_force_and_respects_budget() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        nbytes = np.sort(rng.integers(1, 50, (5, 3)), axis=1)
        cost = np.sort(rng.random((5, 3)), axis=1)[:, ::-1].copy()
        p = Problem([f"l{i}" for i in range(5)], ["a", "b", "c"], cost, nbytes, 7)
        budget = int(rng.integers(p.min_bytes(), p.min_bytes() + 100))
        best = min(p.total(c)[0] for c in itertools.product(range(3), repeat=5)
                   if p.total(c)[1] <= budget)
        m = solve_milp(p, budget)
        assert p.total(m)[1] <= budget and p.total(m)[0] == pytest.approx(best)
        g = solve_greedy(p, budget)
        assert p.total(g)[1] <= budget and p.total(g)[0] >= best - 1e-12


def test_budget_below_minimum_names_the_minimum() -> None:
    p = _problem([[1.0, 0.0]], [[5, 9]], fixed=100)
    with pytest.raises(UserError, match="105 bytes"):
        solve_milp(p, 104)
    with pytest.raises(UserError, match="105 bytes"):
        solve_greedy(p, 104)


def test_pareto_is_monotone() -> None:
    rng = np.random.default_rng(1)
    p = Problem(["a", "b", "c"], ["x", "y", "z"], np.sort(rng.random((3, 3)))[:, ::-1].copy(),
                np.sort(rng.integers(1, 30, (3, 3)), axis=1), 0)
    curve = pareto(p, range(0, 100, 5))
    assert curve and all(pt["size_bytes"] <= pt["budget_bytes"] for pt in curve)
    inc = [pt["predicted_increase"] for pt in curve]
    assert inc == sorted(inc, reverse=True)


def test_sensitivity_and_proxy_on_tiny_model() -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    formats = ["keep", "int8g16a", "int2g16a"]

    def loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(m(idx[:, :-1], idx[:, 1:])[1])

    base, measured = measure_sensitivity(model, formats, loss)
    assert base == pytest.approx(loss(model))  # the model is restored afterwards
    assert measured.shape == (len(quantizable_layers(model)), 3)
    assert np.all(measured[:, 0] == 0)
    assert np.abs(measured[:, 1]).mean() < np.abs(measured[:, 2]).mean()
    proxy = proxy_sensitivity(model, formats, idx)
    assert np.all(proxy[:, 1] < proxy[:, 2])
    assert -1.0 <= spearman(measured, proxy, formats) <= 1.0


def test_dominated_formats_are_the_ones_no_optimum_needs() -> None:
    # layer 0: f1 is larger and worse than f0 (dominated); f2 ties f0 exactly (the later
    # of identical formats is dropped); layer 1: a plain trade-off, nothing dominated
    p = _problem([[1.0, 2.0, 1.0], [3.0, 2.0, 1.0]], [[5, 6, 5], [1, 2, 3]])
    assert dominated(p).tolist() == [[False, True, True], [False, False, False]]


def test_greedy_is_fast_and_feasible_on_hundreds_of_layers() -> None:
    rng = np.random.default_rng(0)
    nbytes = np.sort(rng.integers(100, 10_000, (300, 8)), axis=1)
    cost = np.sort(rng.random((300, 8)), axis=1)[:, ::-1].copy()
    p = Problem([f"l{i}" for i in range(300)], [str(j) for j in range(8)], cost, nbytes, 0)
    budget = (p.min_bytes() + int(nbytes[:, -1].sum())) // 2
    g, m = solve_greedy(p, budget), solve_milp(p, budget)
    assert p.total(g)[1] <= budget and p.total(m)[1] <= budget
    assert p.total(m)[0] <= p.total(g)[0] + 1e-9


def test_joint_choice_keeps_the_best_measured_candidate() -> None:
    from lmalloc.compress.quantize import size_bytes
    from lmalloc.compress.stage import (
        Calibration,
        CompressSettings,
        build_problem,
        choose_jointly,
    )

    model = tiny_model()
    formats = ["keep", "int8g16a", "int4g16a", "int2g16a"]
    n = len(quantizable_layers(model))
    cost = np.tile([0.0, 0.01, 0.1, 1.0], (n, 1))
    cost[0] = [0.0, 5.0, 5.0, 5.0]  # the table says: keep layer 0, whatever it costs
    p = build_problem(model, formats, cost)
    budget = p.total([2] * n)[1]  # uniform int4 fits exactly
    x = [torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(0))]
    calib = Calibration(x, x, x)
    pick, q, cands = choose_jointly(model, p, budget, CompressSettings(method="rtn"), calib,
                                    {}, lambda m: -float(size_bytes(m)))  # bigger is better
    assert {"milp", "greedy", "uniform:int4g16a", "uniform:int2g16a"} <= set(cands)
    assert cands[pick]["measured"] == min(c["measured"] for c in cands.values())
    assert size_bytes(q) == cands[pick]["bytes"] <= budget

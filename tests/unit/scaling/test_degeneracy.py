"""A degenerate ladder table gets the MAP remedy, and the plan then leaves the ladder floor;
when the remedy cannot fix it, the ladder's IsoFLOP levels decide where the plan's size comes
from (approach 2, or the edge every level prefers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lmalloc.scaling.degeneracy import (
    DEFAULT_PRIOR,
    data_preference,
    diagnose,
    fit_with_remedy,
    is_degenerate,
    isoflop_cross_check,
    isoflop_levels,
    size_rule,
)
from lmalloc.scaling.parametric import ParametricFit, fit_parametric
from lmalloc.scaling.simulate import chinchilla_loss, true_optimum

TRUE = {"E": 3.0, "A": 8.0, "alpha": 0.25, "B": 30.0, "beta": 0.3}
C_TOP = 1e13


def _ladder_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4-size, 8x ladder with branches at 1/4, 1/2, 1 of C_TOP (IsoFLOP levels), from a law
    whose size term moves the loss by only ~0.1 across the sizes, with 1.5 % noise: the seed
    is one where the plain fit sends alpha above 2 with A ~ 1e12 (larger models 'no better'),
    which puts the plan at the ladder's floor although the law's optimum is ~10x above it."""
    Ns = np.array([1e5, 2e5, 4e5, 8e5])
    N = np.repeat(Ns, 3)
    D = np.array([f * C_TOP / (6 * n) for n in Ns for f in (0.25, 0.5, 1.0)])
    rng = np.random.default_rng(4)
    return N, D, chinchilla_loss(N, D, TRUE) * np.exp(0.015 * rng.standard_normal(N.size))


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _ladder_table()


@pytest.fixture(scope="module")
def remedied(table) -> tuple[ParametricFit, dict]:  # type: ignore[no-untyped-def]
    N, D, L = table
    return fit_with_remedy(N, D, L, bootstrap=10, param_convention="non_embedding")


def test_the_plain_fit_is_degenerate(table) -> None:  # type: ignore[no-untyped-def]
    N, D, L = table
    plain = fit_parametric(N, D, L, bootstrap=0, param_convention="non_embedding")
    problems = diagnose(plain.params, plain.input_range)
    assert is_degenerate(problems), plain.params  # else the remedy test below is vacuous
    assert any(p["code"] == "exponent" and "alpha" in p["message"] for p in problems)


def test_remedy_is_a_map_fit_with_its_prior_stated(remedied) -> None:  # type: ignore[no-untyped-def]
    fit, report = remedied
    assert report["degenerate"] and report["remedy"] == "map"
    assert report["prior"]["sd"] == DEFAULT_PRIOR.sd and report["prior"]["mean"]["alpha"] == 0.34
    assert not report["degenerate_after"]
    assert fit.prior is not None and 0.1 < fit.params["alpha"] < 0.7
    assert ParametricFit.from_dict(fit.to_dict()).prior == fit.prior


def test_the_plan_is_not_the_degenerate_artefact(table, remedied) -> None:  # type: ignore[no-untyped-def]
    from lmalloc.cost.hardware import get_hardware
    from lmalloc.plan.allocate import allocate

    N, D, L = table
    fit, _ = remedied
    plain = fit_parametric(N, D, L, bootstrap=0, param_convention="non_embedding")
    hw = get_hardware("cpu")
    target = 10 * C_TOP
    kw = dict(vocab_size=4096, seq_len=128, batch_tokens=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        at_floor = allocate(plain, target, hw, **kw).chosen.N
        fixed = allocate(fit, target, hw, **kw).chosen.N
    n_true, _ = true_optimum(target, TRUE)
    # the degenerate fit's plan sits near the bottom of the ladder, > 2x below the law's
    # optimum; the remedied one lands within 1.7x of it (shapes near 1M come in ~1.4x steps
    # under the depth rule), far from the floor
    assert at_floor < n_true / 2 and at_floor < 5 * N.min()
    assert abs(np.log(fixed / n_true)) < np.log(1.7), (fixed, n_true)
    assert fixed > 5 * N.min()


def test_a_sound_fit_is_left_alone() -> None:
    Ns = np.array([1e5, 2e5, 4e5, 8e5])
    N = np.repeat(Ns, 3)
    D = np.array([f * C_TOP / (6 * n) for n in Ns for f in (0.25, 0.5, 1.0)])
    law = {"E": 1.8, "A": 300.0, "alpha": 0.3, "B": 600.0, "beta": 0.32}
    L = chinchilla_loss(N, D, law) * np.exp(0.01 * np.random.default_rng(0).standard_normal(12))
    fit, report = fit_with_remedy(N, D, L, bootstrap=0, param_convention="non_embedding")
    assert not report["degenerate"] and report["remedy"] is None and fit.prior is None


def test_diagnose_names_a_vanished_term() -> None:
    params = {"E": 2.0, "A": 1e-9, "B": 400.0, "alpha": 0.3, "beta": 0.3}
    got = diagnose(params, {"N": (1e5, 1e6), "D": (1e6, 1e7)})
    assert [p["code"] for p in got] == ["vanished"]


def test_isoflop_cross_check_on_the_branches(table, remedied) -> None:  # type: ignore[no-untyped-def]
    N, D, L = table
    check = isoflop_cross_check(N, D, L, remedied[0], 10 * C_TOP)
    assert check is not None and set(check) >= {"available"}
    if check["available"]:
        assert check["N_opt_isoflop"] > 0 and check["ratio"] > 0


def test_a_ladder_cut_short_is_fitted_under_the_prior() -> None:
    """A ladder that held its share by dropping points (here 5 of 12: two sizes, some branches)
    is too small for a plain fit; it is fitted under the prior, and says why."""
    N, D, loss = _ladder_table()
    keep = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) < 5
    with pytest.raises(Exception, match="needs at least 8"):
        fit_parametric(N[keep], D[keep], loss[keep], bootstrap=0)
    fit, report = fit_with_remedy(N[keep], D[keep], loss[keep], bootstrap=10, seed=0)
    assert report["remedy"] == "map" and report["plain_params"] is None
    assert [p["code"] for p in report["problems"]] == ["too_few"]
    assert fit.prior is not None and fit.n_points == 5
    # the prior pins the exponents near its mean; the data set the coefficients
    assert abs(fit.params["alpha"] - DEFAULT_PRIOR.mean["alpha"]) < 2 * DEFAULT_PRIOR.sd
    assert np.all(np.abs(np.log(fit.predict(N[keep], D[keep]) / loss[keep])) < 0.05)
    with pytest.raises(Exception, match="needs at least 5"):
        fit_with_remedy(N[:4], D[:4], loss[:4], bootstrap=0)


def _levels_table(law: dict[str, float], Ns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Branches at 1/4, 1/2 and 1 of C_TOP for each size: three IsoFLOP levels (C = 6 N D)."""
    N = np.repeat(Ns, 3)
    C = np.tile([0.25 * C_TOP, 0.5 * C_TOP, C_TOP], Ns.size)
    D = C / (6 * N)
    return N, D, C, chinchilla_loss(N, D, law)


def test_levels_name_the_edge_the_data_prefer() -> None:
    """A law whose optimum lies below the ladder: the smallest size wins at every level, and
    the rule for the plan's size says the measurements put it there."""
    law = {"E": 3.0, "A": 1.0, "alpha": 0.3, "B": 400.0, "beta": 0.3}  # optimum far below 1e5
    N, D, C, L = _levels_table(law, np.array([1e5, 2e5, 4e5, 8e5]))
    levels = isoflop_levels(N, L, C)
    assert [lv["at"] for lv in levels] == ["smallest"] * 3 and levels[0]["sizes"] == 4
    assert data_preference(levels) == {"at": "smallest", "N": 1e5}
    laws = {"degeneracy": {"degenerate": True, "remedy": "map", "degenerate_after": True},
            "isoflop_check": {"available": False, "levels": levels,
                              "data_prefer": data_preference(levels)}}
    assert size_rule(laws)["source"] == "data: smallest" and size_rule(laws)["N"] == 1e5
    # the same table with the optimum inside the sizes prefers no edge
    N, D, C, L = _levels_table(TRUE | {"A": 400.0, "B": 400.0},
                               np.geomspace(1e4, 1e7, 7))
    levels = isoflop_levels(N, L, C)
    assert {lv["at"] for lv in levels} == {"inside"}
    # the optimum grows with compute: the levels disagree on the best size, so no preference
    assert len({lv["best_N"] for lv in levels}) > 1 and data_preference(levels) is None
    same = [dict(lv, best_N=4e5) for lv in levels]  # ... unless they agree
    assert data_preference(same) == {"at": "inside", "N": 4e5}


def test_the_cross_check_groups_levels_by_the_measured_flops() -> None:
    """The ladder's levels are equal in exact training FLOPs, not in 6 N D: grouped by 6 N D
    (here skewed by a per-size factor, like the output layer's FLOPs) no level has 3 sizes;
    grouped by the measured C the three levels appear."""
    N, D, C, L = _levels_table(TRUE, np.array([1e5, 2e5, 4e5, 8e5]))
    fit = fit_parametric(N, D, L, bootstrap=0, param_convention="non_embedding")
    skew = np.repeat([1.0, 1.3, 1.7, 2.2], 3)  # D as if each size paid more FLOPs per token
    by_knd = isoflop_cross_check(N, D / skew, L, fit, 10 * C_TOP)
    by_c = isoflop_cross_check(N, D / skew, L, fit, 10 * C_TOP, C=C)
    assert len(by_knd["levels"]) == 0 and len(by_c["levels"]) == 3
    assert by_c["compute"] == "measured FLOPs"


def test_size_rule_sources() -> None:
    sound = {"degeneracy": {"degenerate": False}}
    fixed = {"degeneracy": {"degenerate": True, "remedy": "map", "degenerate_after": False}}
    still = {"degenerate": True, "remedy": "map", "degenerate_after": True}
    iso = {"available": True, "k_N": 0.5, "a": 0.45, "levels": [], "data_prefer": None}
    assert size_rule(sound)["source"] == size_rule(fixed)["source"] == "law"
    rule = size_rule({"degeneracy": still, "isoflop_check": iso})
    assert rule["source"] == "approach 2" and (rule["k_N"], rule["a"]) == (0.5, 0.45)
    nothing = {"degeneracy": still, "isoflop_check": {"available": False, "levels": [],
                                                      "data_prefer": None}}
    assert size_rule(nothing)["source"] == "degenerate law"
    agreed = {"degeneracy": still, "isoflop_check": {
        "available": False, "levels": [], "data_prefer": {"at": "inside", "N": 2e5}}}
    assert size_rule(agreed)["source"] == "data: best size" and size_rule(agreed)["N"] == 2e5


def test_a_target_size_moves_the_plan_off_the_floor(table) -> None:  # type: ignore[no-untyped-def]
    """Approach 2's N* (``n_target``) chooses the shape when the L(N, D) fit cannot: the plan
    lands at the feasible shape nearest it, not at the degenerate fit's floor."""
    from lmalloc.cost.hardware import get_hardware
    from lmalloc.plan.allocate import allocate

    N, D, L = table
    plain = fit_parametric(N, D, L, bootstrap=0, param_convention="non_embedding")
    kw = dict(vocab_size=4096, seq_len=128, batch_tokens=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        floor = allocate(plain, 10 * C_TOP, get_hardware("cpu"), **kw).chosen.N
        moved = allocate(plain, 10 * C_TOP, get_hardware("cpu"), n_target=3e6, **kw).chosen.N
    assert floor < 5 * N.min()
    assert abs(np.log(moved / 3e6)) < np.log(1.3), moved

"""The strategy registry: names, options, errors."""

from __future__ import annotations

import optuna
import pytest

from lmalloc.errors import UserError
from lmalloc.search import AUTO_GP, SearchSpace, make_sampler, strategy_names
from lmalloc.search.dqn import DQNSampler
from lmalloc.search.strategies import MAX_GRID_SIZE, all_strategies, register_strategy

SPACE = SearchSpace.from_dict({"params": {"x": {"type": "float", "low": 0, "high": 1}}})


def test_the_documented_names_are_registered() -> None:
    expected = {"grid", "random", "tpe", "gp", "cmaes", "nsga2", "qmc", "pg", "dqn", "bandit",
                "auto"}
    assert expected <= set(strategy_names())


@pytest.mark.parametrize("name", ["grid", "random", "tpe", "cmaes", "nsga2", "qmc", "pg", "dqn",
                                  "bandit"])
def test_every_strategy_builds_a_sampler(name: str) -> None:
    assert isinstance(make_sampler(name, SPACE, seed=0), optuna.samplers.BaseSampler)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as info:
        make_sampler("bayes", SPACE, seed=0)
    assert "bayes" in str(info.value)
    for name in ("tpe", "pg", "dqn", "auto"):
        assert name in str(info.value)


def test_unknown_option_is_a_user_error() -> None:
    with pytest.raises(UserError, match="n_startup"):
        make_sampler("tpe", SPACE, seed=0, n_startup=3)
    with pytest.raises(UserError, match="lr"):
        make_sampler("pg", SPACE, seed=0, lr=3)


def test_options_reach_the_sampler() -> None:
    pg = make_sampler("pg", SPACE, seed=0, batch_size=7)
    assert pg.batch_size == 7  # type: ignore[attr-defined]


def test_grid_needs_a_space_of_reasonable_size() -> None:
    with pytest.raises(UserError, match="search space"):
        make_sampler("grid", None, seed=0)
    big = SearchSpace.from_dict(
        {"params": {f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(8)}}
    )
    assert big.grid_size() > MAX_GRID_SIZE
    with pytest.raises(UserError, match="grid_points"):
        make_sampler("grid", big, seed=0)


def test_auto_is_gp_without_conditions_and_dqn_with_them() -> None:
    sampler = make_sampler("auto", SPACE, seed=0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert sampler._n_startup_trials == AUTO_GP["n_startup_trials"]
    conditional = SearchSpace.from_dict(
        {
            "params": {
                "s": {"type": "categorical", "choices": ["a", "b"]},
                "x": {"type": "float", "low": 0, "high": 1, "when": {"s": "a"}},
            }
        }
    )
    for space in (conditional, None):
        sampler = make_sampler("auto", space, seed=0)
        assert isinstance(sampler, DQNSampler)


def test_register_a_strategy() -> None:
    register_strategy("fixed_random", lambda space, seed: optuna.samplers.RandomSampler(seed), "x")
    try:
        assert isinstance(make_sampler("fixed_random", SPACE, 0), optuna.samplers.RandomSampler)
    finally:
        import lmalloc.search.strategies as mod

        mod._REGISTRY.pop("fixed_random")
    assert "fixed_random" not in all_strategies()


def test_auto_uses_dqn_when_the_study_prunes() -> None:
    """GP learns from COMPLETE trials only: under ASHA it would stay random."""
    assert isinstance(make_sampler("auto", SPACE, seed=0, pruned=True), DQNSampler)
    assert isinstance(make_sampler("auto", SPACE, seed=0, pruned=False),
                      optuna.samplers.GPSampler)


def test_auto_is_tpe_for_two_objectives_even_when_pruned(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pg, dqn and bandit refuse Pareto studies; auto must not pick them there."""
    from lmalloc.search.study import SearchSettings, load_study

    for pruned in (True, False):
        sampler = make_sampler("auto", SPACE, seed=0, pruned=pruned, objectives=2)
        assert isinstance(sampler, optuna.samplers.TPESampler)
    study = load_study(SearchSettings(
        run_dir=str(tmp_path), space=SPACE.to_dict(), base_model={},
        base_train={"max_tokens": 1000}, second_objective="params"))
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert len(study.directions) == 2


def test_search_study_passes_its_pruner_to_auto(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lmalloc.search.study import SearchSettings, load_study

    base = {"run_dir": str(tmp_path), "space": SPACE.to_dict(), "base_model": {},
            "base_train": {"max_tokens": 1000}}
    study = load_study(SearchSettings(**base))
    assert isinstance(study.sampler, DQNSampler)
    assert study.user_attrs["strategy"] == "auto=DQNSampler"  # the report's label
    s = SearchSettings(**base, pruner="none")
    assert isinstance(load_study(s).sampler, optuna.samplers.GPSampler)

"""SearchSpace: parsing, validation, conditions, suggestion and grids."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lmalloc.errors import UserError
from lmalloc.search import SearchSpace

REPO = Path(__file__).resolve().parents[3]


def _space(**params: dict) -> SearchSpace:
    return SearchSpace.from_dict({"params": params})


def test_tiny_recipe_space_loads_and_suggests() -> None:
    space = SearchSpace.from_toml(REPO / "configs" / "space_tiny.toml")
    assert {"lr", "schedule", "cooldown_frac", "beta2", "batch_tokens"} <= set(space.names)
    assert space["cooldown_frac"].when == {"schedule": ("wsd",)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        assert ("cooldown_frac" in params) == (params["schedule"] == "wsd")
        assert 1e-4 <= params["lr"] <= 3e-2
        seen.add(params["schedule"])
        study.tell(trial, 0.0)
    assert seen == {"cosine", "wsd"}


def test_distributions() -> None:
    space = _space(
        lr={"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        n={"type": "int", "low": 16, "high": 64, "step": 16},
        s={"type": "categorical", "choices": ["a", "b"]},
    )
    d = space.distributions()
    assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["n"] == IntDistribution(16, 64, step=16)
    assert d["s"] == CategoricalDistribution(["a", "b"])


def test_grid_points_log_int_step_and_explicit() -> None:
    space = SearchSpace.from_dict(
        {
            "grid_points": 3,
            "params": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "n": {"type": "int", "low": 1, "high": 4},
                "f": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1, "grid": [0, 0.9]},
                "s": {"type": "categorical", "choices": ["a", "b"]},
            },
        }
    )
    grid = space.grid()
    assert [round(math.log10(v), 9) for v in grid["lr"]] == [-4, -3, -2]
    assert grid["n"] == [1, 2, 4] or grid["n"] == [1, 3, 4]  # 2.5 rounds to even
    assert grid["f"] == [0, 0.9]
    assert grid["s"] == ["a", "b"]
    assert space.grid_size() == 3 * 3 * 2 * 2


def test_nested_conditions_and_order_independence() -> None:
    # The child is declared before its parents: suggestion order follows the conditions.
    space = _space(
        power={"type": "float", "low": 0.1, "high": 1.0, "when": {"shape": "sqrt"}},
        shape={"type": "categorical", "choices": ["lin", "sqrt"], "when": {"sched": "wsd"}},
        sched={"type": "categorical", "choices": ["cos", "wsd"]},
    )
    assert not space.is_active("power", {"sched": "cos", "shape": "sqrt"})
    assert space.is_active("power", {"sched": "wsd", "shape": "sqrt"})
    fixed = optuna.trial.FixedTrial({"sched": "wsd", "shape": "sqrt", "power": 0.5})
    assert space.suggest(fixed) == {"power": 0.5, "shape": "sqrt", "sched": "wsd"}
    fixed = optuna.trial.FixedTrial({"sched": "cos"})
    assert space.suggest(fixed) == {"sched": "cos"}


def test_when_accepts_a_list_of_values() -> None:
    space = _space(
        s={"type": "categorical", "choices": ["a", "b", "c"]},
        x={"type": "float", "low": 0, "high": 1, "when": {"s": ["a", "c"]}},
    )
    assert space.is_active("x", {"s": "c"}) and not space.is_active("x", {"s": "b"})


def test_round_trip_through_dict() -> None:
    space = SearchSpace.from_toml(REPO / "configs" / "space_tiny.toml")
    again = SearchSpace.from_dict(space.to_dict())
    assert again.distributions() == space.distributions()
    assert again.grid() == space.grid()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"params": {}}, "empty"),
        ({}, "empty"),
        ({"params": {"x": {"type": "float", "low": 1, "high": 1}}}, "below high"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1, "log": True}}}, "> 0"),
        ({"params": {"x": {"type": "floaty", "low": 0, "high": 1}}}, "float, int, categorical"),
        ({"params": {"x": {"low": 0, "high": 1}}}, "params.x.type"),
        ({"params": {"x": {"type": "float", "low": "a", "high": 1}}}, "a number"),
        ({"params": {"x": {"type": "int", "low": 0.5, "high": 3}}}, "integers"),
        ({"params": {"x": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}}}, "step"),
        ({"params": {"x": {"type": "int", "low": 0, "high": 7, "step": 2}}}, "divisor"),
        ({"params": {"x": {"type": "categorical", "choices": []}}}, "non-empty"),
        ({"params": {"x": {"type": "categorical", "choices": [1, 1]}}}, "distinct"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1, "lo": 3}}}, "one of the keys"),
        ({"params": {"x": {"type": "float", "low": 0, "high": 1, "grid": [2]}}}, "grid"),
        ({"params": {"x": 3}}, "a table"),
        ({"param": {}}, "search space key"),
        ({"grid_points": 0, "params": {"x": {"type": "categorical", "choices": [1]}}}, "grid"),
    ],
)
def test_invalid_spaces_are_user_errors(spec: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        SearchSpace.from_dict(spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ({"nope": "wsd"}, "a parameter of this space"),
        ({"schedule": "linear"}, "one of the choices of schedule"),  # contradictory
        ({"lr": 0.1}, "a categorical parameter"),
        ({"cooldown": "x"}, "cannot gate itself"),
    ],
)
def test_bad_conditions_are_user_errors(when: dict, fragment: str) -> None:
    spec = {
        "params": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "schedule": {"type": "categorical", "choices": ["cosine", "wsd"]},
            "cooldown": {"type": "float", "low": 0.1, "high": 0.5, "when": when},
        }
    }
    with pytest.raises(UserError) as info:
        SearchSpace.from_dict(spec)
    assert fragment in str(info.value)


def test_condition_cycle_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cycle"):
        _space(
            a={"type": "categorical", "choices": [1, 2], "when": {"b": 1}},
            b={"type": "categorical", "choices": [1, 2], "when": {"a": 1}},
        )


def test_duplicate_names_are_a_user_error() -> None:
    from lmalloc.search import Param

    p = Param("x", "float", 0.0, 1.0)
    with pytest.raises(UserError, match="duplicate"):
        SearchSpace([p, p])


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        SearchSpace.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[params.x\n")
    with pytest.raises(UserError, match="not valid TOML"):
        SearchSpace.from_toml(bad)

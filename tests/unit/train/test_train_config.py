"""TrainConfig validation, the batch rule, and recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.train.config import TrainConfig, load_recipe, round_batch_tokens

REPO = Path(__file__).resolve().parents[3]


def cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"batch_tokens": 1024, "micro_batch": 4, "seq_len": 64,
                               "max_steps": 10}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_defaults_valid_and_accum() -> None:
    c = cfg()
    assert c.grad_accum(1) == 4
    assert c.grad_accum(2) == 2
    assert c.grad_accum(4) == 1


@pytest.mark.parametrize("field,value,fragment", [
    ("lr", -1.0, "lr"), ("lr", 0, "lr"), ("schedule", "linear", "schedule"),
    ("precision", "fp16", "precision"), ("device", "tpu", "device"),
    ("beta2", 1.0, "beta2"), ("min_lr_ratio", 2.0, "min_lr_ratio"),
    ("micro_batch", 0, "micro_batch"), ("spike_factor", 0.5, "spike_factor"),
    ("max_steps", -3, "max_steps"), ("seq_len", 2.5, "seq_len"),
])
def test_bad_values_name_the_field(field: str, value: object, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as e:
        cfg(**{field: value})
    assert repr(value) in str(e.value)


def test_needs_a_stop_condition() -> None:
    with pytest.raises(UserError, match="stop condition"):
        TrainConfig(batch_tokens=1024, micro_batch=4, seq_len=64)


def test_batch_smaller_than_a_sequence() -> None:
    with pytest.raises(UserError, match="smaller than one sequence"):
        cfg(batch_tokens=32)


def test_batch_must_divide_and_names_nearest_values() -> None:
    with pytest.raises(UserError, match="nearest valid values: 1024, 1280"):
        cfg(batch_tokens=1100)
    with pytest.raises(UserError, match="world_size"):
        cfg(batch_tokens=768).grad_accum(2)  # 3 micro-batches over 2 ranks


def test_micro_batch_shrinks_to_the_batch() -> None:
    c = cfg(batch_tokens=128, micro_batch=8)
    assert c.micro_batch_for() == 2 and c.grad_accum() == 1


def test_round_batch_tokens_is_valid() -> None:
    for want in (100, 1000, 5000, 70000):
        b = round_batch_tokens(want, 64, 8, world_size=2)
        cfg(batch_tokens=b, micro_batch=8).grad_accum(2)


def test_resume_hash_ignores_time_limit_only() -> None:
    assert cfg().resume_hash() == cfg(max_seconds=5.0).resume_hash()
    assert cfg().resume_hash() != cfg(lr=1e-4).resume_hash()


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(UserError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3, "max_steps": 1})


def recipes() -> list[Path]:
    """Every configs/*.toml with a [model] or [train] table (search spaces live there too)."""
    import tomllib

    return [p for p in sorted((REPO / "configs").glob("*.toml"))
            if {"model", "train"} & set(tomllib.loads(p.read_text()))]


def test_every_recipe_loads_and_validates() -> None:
    from lmalloc.model.config import GPTConfig

    found = recipes()
    assert {"tiny.toml", "small.toml"} <= {p.name for p in found}
    for path in found:
        model_kw, train = load_recipe(path)
        GPTConfig(vocab_size=512, **model_kw)
        assert train.seq_len <= model_kw.get("seq_len", train.seq_len)


def test_recipe_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = -1\nmax_steps = 3\n")
    with pytest.raises(UserError, match="bad.toml.*lr"):
        load_recipe(bad)
    (tmp_path / "v.toml").write_text("[model]\nvocab_size = 3\n")
    with pytest.raises(UserError, match="vocab_size"):
        load_recipe(tmp_path / "v.toml")
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "missing.toml")

"""PrepareConfig validates at construction and names the field, value and allowed range."""

from __future__ import annotations

import pytest

from lmalloc.data.config import FIELD_HELP, PrepareConfig
from lmalloc.errors import UserError


@pytest.mark.parametrize(
    ("field", "value"),
    [("vocab_size", 10), ("vocab_size", 1.5), ("jaccard_threshold", 0.0),
     ("jaccard_threshold", 1.5), ("val_fraction", 0.0), ("val_fraction", 0.9),
     ("num_perm", 4), ("shingle_size", 0), ("min_chars", -1), ("text_field", ""),
     ("shard_tokens", 10), ("max_malformed_frac", 2)],
)
def test_bad_values_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"invalid {field} = {value!r}"):
        PrepareConfig(**{field: value})  # type: ignore[arg-type]


def test_round_trip_and_unknown_key() -> None:
    cfg = PrepareConfig(vocab_size=512, include=("*.txt",))
    assert PrepareConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="prepare config key"):
        PrepareConfig.from_dict({"vocab": 3})


def test_every_field_has_help() -> None:
    assert set(FIELD_HELP) == set(PrepareConfig().to_dict())

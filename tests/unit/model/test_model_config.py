"""GPTConfig: validation names field, value and what is allowed; dict round trip."""

from __future__ import annotations

import pytest

from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig, default_ff_dim


def make(**kw: object) -> GPTConfig:
    base: dict[str, object] = dict(vocab_size=100, n_layer=2, n_head=4, d_model=32)
    base.update(kw)
    return GPTConfig(**base)  # type: ignore[arg-type]


def test_derived_properties() -> None:
    cfg = make(n_kv_head=2)
    assert (cfg.head_dim, cfg.kv_heads, cfg.ff_dim) == (8, 2, default_ff_dim(32))
    assert make().kv_heads == 4
    assert make(d_ff=50).ff_dim == 50


def test_default_ff_dim_rule() -> None:
    assert default_ff_dim(768) == 2048  # 8/3 * 768 = 2048 exactly
    assert default_ff_dim(1024) % 64 == 0 and default_ff_dim(1024) >= 8 * 1024 / 3
    assert default_ff_dim(64) == 176  # 170.7 rounded up to a multiple of 16


def test_round_trip() -> None:
    cfg = make(n_kv_head=1, tie_embeddings=False, mup_base_width=16, dropout=0.1)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(n_head=5), "n_head"),
        (dict(n_head=32), "n_head"),  # head_dim 1: odd, RoPE needs pairs
        (dict(n_kv_head=3), "n_kv_head"),
        (dict(d_model=0), "d_model"),
        (dict(n_layer=-1), "n_layer"),
        (dict(vocab_size=2.5), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(init_std=0), "init_std"),
        (dict(d_ff=0), "d_ff"),
        (dict(mup_base_width=-4), "mup_base_width"),
        (dict(tie_embeddings="yes"), "tie_embeddings"),
        (dict(n_layer=True), "n_layer"),
    ],
)
def test_contradictions_are_user_errors(kw: dict[str, object], field: str) -> None:
    with pytest.raises(UserError, match=field) as info:
        make(**kw)
    assert repr(next(iter(kw.values()))) in str(info.value)


def test_from_dict_rejects_unknown_and_missing() -> None:
    d = make().to_dict()
    with pytest.raises(UserError, match="n_heads"):
        GPTConfig.from_dict({**d, "n_heads": 4})
    del d["d_model"]
    with pytest.raises(UserError, match="d_model"):
        GPTConfig.from_dict(d)

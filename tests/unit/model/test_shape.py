"""shape_for: close to the target count, monotone, valid heads, sensible aspect ratios."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count
from lmalloc.model.shape import shape_for

TARGETS = np.logspace(5, 9, 41)


def test_count_close_to_target_and_valid_shapes() -> None:
    for target in TARGETS:
        cfg = shape_for(float(target), vocab_size=50304)
        n = param_count(cfg, non_embedding=True)
        # the width grid is coarse for tiny models (a step of 16 at d = 64 is ~25% in count),
        # and the depth rule (RATIO_WEIGHT) trades some count for a depth that grows with N
        tol = 0.3 if target < 1e6 else 0.12
        assert abs(n / target - 1) <= tol, (target, cfg)
        assert cfg.d_model % cfg.n_head == 0 and cfg.head_dim % 2 == 0
        assert 16 <= cfg.head_dim <= 64
        assert cfg.d_model % (64 if cfg.d_model >= 256 else 16) == 0
        assert 16 <= cfg.d_model / cfg.n_layer <= 200  # Kaplan et al.'s flat region, roughly


def test_monotone_in_target() -> None:
    counts = [param_count(shape_for(float(t), 32000), non_embedding=True)
              for t in np.logspace(5, 9, 21)]  # targets 1.58x apart
    assert counts == sorted(counts)
    widths = [shape_for(float(t), 32000).d_model for t in np.logspace(5, 9, 9)]
    assert widths == sorted(widths)


def test_depth_grows_with_the_target() -> None:
    """One depth rule: depth rises with N, never falling by more than one layer (the width
    grid can make a neighbour one layer shallower and wider), and d/L stays near r*(N)."""
    from lmalloc.model.shape import target_aspect_ratio

    cfgs = [shape_for(float(t), 4096, 128) for t in np.logspace(4.7, 8, 34)]
    depths = [c.n_layer for c in cfgs]
    assert all(b >= a - 1 for a, b in zip(depths, depths[1:], strict=False)), depths
    assert all(max(depths[:i + 1]) - d <= 1 for i, d in enumerate(depths)), depths
    assert depths[-1] >= 4 * depths[0]
    for c in cfgs:
        r = target_aspect_ratio(param_count(c, non_embedding=True))
        assert abs(np.log2(c.d_model / c.n_layer / r)) <= 0.6, c


def test_known_shapes_and_total_count_option() -> None:
    gpt2 = shape_for(85e6, vocab_size=50304)  # GPT-2 small's non-embedding count
    assert (gpt2.n_layer, gpt2.d_model, gpt2.n_head) == (12, 768, 12)
    total = shape_for(20e6, vocab_size=50304, non_embedding=False)
    assert abs(param_count(total) / 20e6 - 1) < 0.1
    assert shape_for(1e6, 1000, seq_len=64, dropout=0.1).seq_len == 64


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="params"):
        shape_for(-5, 100)
    with pytest.raises(UserError, match="n_layer"):
        shape_for(1e6, 100, n_layer=3)

"""Schedules are pure functions of the step; WSD branches reproduce a full WSD run."""

from __future__ import annotations

import pytest

from lmalloc.train.config import TrainConfig
from lmalloc.train.schedules import Schedule, branch, make_schedule, warmup_steps


def cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"batch_tokens": 1024, "micro_batch": 4, "seq_len": 64,
                               "max_steps": 100, "warmup": 0.1, "min_lr_ratio": 0.1}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_cosine_shape() -> None:
    s = make_schedule(cfg(schedule="cosine"), 100)
    assert s(0) == pytest.approx(0.1)  # warmup: (0+1)/10
    assert s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert s(100) == pytest.approx(0.1) and s(10_000) == pytest.approx(0.1)
    vals = [s(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))


def test_wsd_is_flat_then_linear() -> None:
    s = make_schedule(cfg(schedule="wsd", cooldown_frac=0.2), 100)
    assert [s(i) for i in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert s(90) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(100) == pytest.approx(0.1)


def test_constant_and_token_warmup() -> None:
    c = cfg(schedule="constant", warmup=2048)  # tokens → 2 steps of 1024
    assert warmup_steps(c, 100) == 2
    s = make_schedule(c, 100)
    assert (s(0), s(1), s(2), s(99)) == (0.5, 1.0, 1.0, 1.0)


def test_branch_equals_a_full_wsd_run_of_that_length() -> None:
    """A stable run branched at step 60 with 20 cooldown steps has the lr of an 80-step WSD
    run with a 25% cooldown, step for step."""
    stable = make_schedule(cfg(schedule="wsd", cooldown_frac=0.0, warmup=8 * 1024), 100)
    full = make_schedule(cfg(schedule="wsd", cooldown_frac=0.25, warmup=8 * 1024), 80)
    b = branch(stable, 60, 20)
    assert [b(i) for i in range(90)] == pytest.approx([full(i) for i in range(90)])


def test_branch_only_from_the_stable_phase() -> None:
    s = make_schedule(cfg(schedule="wsd", cooldown_frac=0.2), 100)
    with pytest.raises(ValueError, match="stable"):
        branch(s, 90, 10)
    with pytest.raises(ValueError, match="wsd"):
        branch(make_schedule(cfg(), 100), 50, 10)


def test_roundtrip_dict() -> None:
    s = Schedule("wsd", 3, 50, 60, 0.2)
    assert Schedule.from_dict(s.to_dict()) == s


def test_time_limited_constant_keeps_token_warmup() -> None:
    s = make_schedule(cfg(schedule="constant", warmup=4096), None)
    assert (s(0), s(3), s(10**6)) == (0.25, 1.0, 1.0)
    with pytest.raises(ValueError, match="length"):
        make_schedule(cfg(schedule="cosine"), None)

"""The allocator on a known law: it lands near the closed-form optimum, respects the limits,
and its sensitivity table shows the optimum is a minimum."""

from __future__ import annotations

import pytest

from lmalloc.cost.hardware import get_hardware
from lmalloc.errors import UserError
from lmalloc.plan.allocate import allocate
from lmalloc.scaling.parametric import fit_parametric
from lmalloc.scaling.simulate import simulate_runs


@pytest.fixture(scope="module")
def fit():  # type: ignore[no-untyped-def]
    runs = simulate_runs(seed=0)
    return fit_parametric(runs.N, runs.D, runs.loss, bootstrap=30, seed=0,
                          param_convention="non_embedding")


def test_allocation_near_closed_form_and_a_minimum(fit) -> None:  # type: ignore[no-untyped-def]
    hw = get_hardware("8xH100")
    a = allocate(fit, 1e21, hw, vocab_size=32000, seq_len=2048, batch_tokens=2**20)
    n_star = a.closed_form["N"]["value"]
    assert n_star / 2 < a.chosen.N < n_star * 2
    assert a.chosen.feasible and a.chosen.loss.low <= a.chosen.loss.value <= a.chosen.loss.high
    rows = {r["N_factor"]: r for r in a.sensitivity}
    assert rows[0.5]["delta_loss"] >= 0 and rows[2.0]["delta_loss"] >= 0
    # all of the compute goes to the run: D = C / exact FLOPs per token
    assert a.chosen.D * (a.chosen.flops / a.chosen.D) == pytest.approx(1e21)


def test_time_limit_moves_the_choice_or_refuses(fit) -> None:  # type: ignore[no-untyped-def]
    hw = get_hardware("1xH100")
    free = allocate(fit, 1e20, hw, vocab_size=32000, seq_len=2048, batch_tokens=2**19)
    with pytest.raises(UserError, match="no model fits"):
        allocate(fit, 1e20, hw, vocab_size=32000, seq_len=2048, batch_tokens=2**19,
                 seconds=free.chosen.seconds / 1000)
    small_mem = allocate(fit, 1e20, hw, vocab_size=32000, seq_len=2048, batch_tokens=2**19,
                         memory_bytes=8e9)
    assert small_mem.chosen.memory_bytes <= 8e9


def test_never_below_the_fitted_range(fit) -> None:  # type: ignore[no-untyped-def]
    """A flat fit in N (alpha near 0) must not send the plan to toy models."""
    from dataclasses import replace

    flat = replace(fit, params={**fit.params, "alpha": 1e-6})
    hw = get_hardware("8xH100")
    a = allocate(flat, 1e21, hw, vocab_size=32000, seq_len=2048, batch_tokens=2**20)
    n_min = fit.input_range["N"][0]
    assert a.chosen.N >= n_min
    small = [c for c in a.candidates if c.N < n_min]
    assert all(not c.feasible and "smaller than any fitted run" in c.reason for c in small)


KW_DATA = dict(vocab_size=4096, seq_len=128, batch_tokens=2048)


def test_repetition_moves_the_choice(fit) -> None:
    """Fewer unique tokens than the plan needs: a larger model, fewer passes, a higher loss
    (Muennighoff et al.'s effective tokens), and the epochs on the candidate."""  # type: ignore[no-untyped-def]
    hw = get_hardware("cpu")
    free = allocate(fit, 1e16, hw, **KW_DATA).chosen
    assert free.epochs is None and free.effective_D is None
    scarce = allocate(fit, 1e16, hw, unique_tokens=free.D / 16, **KW_DATA).chosen
    assert scarce.epochs is not None and scarce.effective_D is not None
    assert scarce.N > free.N  # a bigger model, fewer passes over the scarce data
    assert scarce.epochs < 16 and scarce.effective_D < scarce.D
    assert scarce.loss.value > free.loss.value  # repeated tokens are worth less
    plenty = allocate(fit, 1e16, hw, unique_tokens=free.D * 10, **KW_DATA).chosen
    assert plenty.N == free.N and plenty.loss.value == pytest.approx(free.loss.value)
    assert plenty.epochs == pytest.approx(0.1)

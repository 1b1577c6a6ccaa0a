"""Coverage: over repeated simulations, the bootstrap intervals cover the truth about as often
as they claim. The quantities checked are the ones the planner uses — the predicted loss at the
compute-optimal point and N* at a target compute 33x beyond the largest run.

The full parametric study (30 repetitions of 40 resamples, 444 s on a loaded 2-core machine) is
``bench/interval_coverage.py``, outside ``make test``; here the same function runs on a few
repetitions, enough to catch intervals that stopped covering (a zero-width or shifted interval
scores 0), not to estimate the rate.
"""

from __future__ import annotations

import numpy as np

from lmalloc.scaling.coverage import interval_coverage
from lmalloc.scaling.simulate import simulate_runs


def test_interval_coverage_at_target_compute_fast() -> None:
    """4 repetitions of 10 resamples: at nominal 0.9, 2 or fewer hits out of 4 has probability
    0.05 even at a true coverage of 0.7 (seeded, so the outcome is fixed for the code)."""
    rates = interval_coverage(reps=4, bootstrap=10)
    report = ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
    assert rates["loss_opt"] >= 0.75, f"nominal 0.9; observed {report}"
    assert rates["N_opt"] >= 0.75, f"nominal 0.9; observed {report}"


def test_isoflop_exponent_coverage() -> None:
    """Approach 2 is cheap, so its coverage is checked on every run (200 reps offline: 0.975)."""
    from lmalloc.scaling import fit_isoflop

    reps, a_true = 40, 0.28 / (0.34 + 0.28)
    hits, a_hats = 0, []
    for rep in range(reps):
        runs = simulate_runs(seed=900 + rep)
        fit = fit_isoflop(runs.N, runs.loss, C=runs.C, bootstrap=200, seed=rep)
        hits += fit.estimates()["a"].contains(a_true)
        a_hats.append(fit.a)
    assert 0.75 <= hits / reps <= 1.0, f"nominal 0.9; observed {hits / reps:.2f}"
    assert abs(np.mean(a_hats) - a_true) < 0.01  # no visible bias with centred IsoFLOP grids

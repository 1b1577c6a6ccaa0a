"""The fit stage's laws.json entries, composed from a degenerate ladder, a repeat and trials."""

from __future__ import annotations

import numpy as np

from lmalloc.scaling.hyperparams import HyperparameterLaws
from lmalloc.scaling.ladderfit import fit_ladder
from lmalloc.scaling.lawsfile import load_laws, save_laws
from lmalloc.scaling.parametric import ParametricFit


def test_entries_round_trip_through_laws_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from test_degeneracy import C_TOP, _ladder_table  # the engineered degenerate table

    N, D, L = _ladder_table()
    rng = np.random.default_rng(0)
    C = np.repeat([1e11, 1e12], 30)
    lr = 1e-2 * C**-0.1 * np.exp(rng.uniform(-2, 2, C.size))
    trial_loss = 4.0 + 0.05 * np.log(lr / (1e-2 * C**-0.1)) ** 2
    got = fit_ladder(N, D, L, target_flops=10 * C_TOP, repeats=[[L[0], L[0] * 1.01]],
                     hp_trials={"C": C, "loss": trial_loss, "lr": lr}, bootstrap=5)
    assert got["degeneracy"]["remedy"] == "map"
    assert got["seed_noise"]["sd"] is not None
    assert got["degeneracy"]["prior"]["noise"] == got["seed_noise"]["sd"]  # measured noise
    assert got["backtest"]["available"] and got["backtest"]["of"] == 3
    assert isinstance(got["hyperparameters"], HyperparameterLaws)
    save_laws(tmp_path / "laws.json", got)
    back = load_laws(tmp_path / "laws.json")
    assert isinstance(back["parametric"], ParametricFit) and back["parametric"].prior
    assert isinstance(back["hyperparameters"], HyperparameterLaws)
    assert back["backtest"]["held_out_N"] == 8e5


def test_one_scale_of_trials_says_why_no_laws() -> None:
    from test_degeneracy import C_TOP, _ladder_table

    N, D, L = _ladder_table()
    got = fit_ladder(N, D, L, target_flops=10 * C_TOP, bootstrap=0,
                     hp_trials={"C": [1e11] * 5, "loss": [3.0, 2.9, 2.8, 2.9, 3.0],
                                "lr": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]})
    assert got["hyperparameters"]["available"] is False
    assert "2 or more scales" in got["hyperparameters"]["reason"]
    assert got["seed_noise"]["sd"] is None


def test_the_check_in_compute_runs_on_a_ladder_too_small_for_a_plain_refit() -> None:
    """The demo's ladder shape: 3 sizes x 3 branches, 6 points left once each size's longest
    training is held out. A run whose fit used the prior refits with it; a run with a plain fit
    refits those 6 points with the prior too (a plain fit needs 8), as fit_with_remedy does for
    a whole ladder that small. Either way the plan's interval gets its extrapolation part."""
    from test_degeneracy import C_TOP, TRUE, _ladder_table

    from lmalloc.scaling.simulate import chinchilla_loss

    N, D, L = (v[3:] for v in _ladder_table())  # without the smallest size: still degenerate
    got = fit_ladder(N, D, L, target_flops=10 * C_TOP, bootstrap=0)
    assert got["degeneracy"]["remedy"] == "map"
    ex = got["extrapolation"]
    assert ex["available"] and len(ex["points"]) == 3 and ex["rms_log_error"] > 0
    assert ex["refit"] == "map"
    clean = fit_ladder(N, D, chinchilla_loss(N, D, TRUE), target_flops=10 * C_TOP, bootstrap=0)
    assert clean["degeneracy"]["remedy"] is None
    ex = clean["extrapolation"]
    assert ex["available"] and ex["refit"].startswith("map (too few points")
    # the check measures a real error: the prior pulls the refit off the noiseless law
    assert 0 < ex["rms_log_error"] < 0.2

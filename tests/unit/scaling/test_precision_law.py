"""The precision law's fitter recovers a known law, reports an interval that covers it, and
refuses data that cannot identify it."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling.precision import PrecisionLaw, fit_precision_law

TRUE = {"log_c": -9.0, "gamma_d": 1.2, "gamma_n": 0.6, "gamma_b": 0.7}


def _measure(noise: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    N, D, b = (a.ravel() for a in np.meshgrid([1e5, 2e5, 4e5], [2e5, 4e5, 8e5], [2, 3, 4, 8]))
    law = PrecisionLaw(**TRUE, boot=np.empty((0, 4)), points=0)
    delta = np.array([law.predict(n, d, int(k)).value for n, d, k in zip(N, D, b, strict=True)])
    return N, D, b, delta * np.exp(rng.normal(0, noise, len(delta)))


def test_recovers_a_known_law_and_covers_it() -> None:
    N, D, b, delta = _measure(noise=0.1)
    law = fit_precision_law(N, D, b, delta, bootstrap=100)
    assert law.gamma_d == pytest.approx(TRUE["gamma_d"], abs=0.15)
    assert law.gamma_n == pytest.approx(TRUE["gamma_n"], abs=0.15)
    assert law.gamma_b == pytest.approx(TRUE["gamma_b"], rel=0.1)
    true = PrecisionLaw(**TRUE, boot=np.empty((0, 4)), points=0).predict(3e5, 1e6, 3).value
    est = law.predict(3e5, 1e6, 3)
    assert est.low <= true <= est.high and est.low < est.value < est.high
    # the noise floor: 8-bit points (below 1e-3) were left out
    assert law.points == int((delta > 1e-3).sum()) < len(delta)


def test_unquantized_costs_nothing_and_fewer_bits_cost_more() -> None:
    law = fit_precision_law(*_measure(noise=0.0), bootstrap=0)
    assert law.predict(1e5, 1e6, None).value == 0.0
    costs = [law.predict(1e5, 1e6, k).value for k in (8, 4, 3, 2)]
    assert costs == sorted(costs) and costs[0] > 0


def test_round_trips_through_json() -> None:
    law = fit_precision_law(*_measure(noise=0.1), bootstrap=20)
    again = PrecisionLaw.from_dict(law.to_dict())
    assert again.predict(2e5, 5e5, 3) == law.predict(2e5, 5e5, 3)
    with pytest.raises(UserError, match="not a precision law"):
        PrecisionLaw.from_dict({"gamma_d": 1.0})


def test_refuses_what_cannot_identify_it() -> None:
    N, D, b, delta = _measure(noise=0.0)
    with pytest.raises(UserError, match="at least 5"):
        fit_precision_law(N, D, b, np.full_like(delta, 1e-5))  # all below the noise floor
    one_n = N == N[0]
    with pytest.raises(UserError, match="distinct N"):
        fit_precision_law(N[one_n], D[one_n], b[one_n], delta[one_n])
    with pytest.raises(UserError, match="fewer bits cost less"):
        fit_precision_law(N, D, b, 1e-2 * np.exp(0.5 * b) * D / 1e5)

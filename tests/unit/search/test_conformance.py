"""Every search strategy passes the sampler conformance suite (one fixture line each)."""

from __future__ import annotations

import pytest

from lmalloc.testing.samplers import SamplerCase, SamplerConformance, strategy_case

CASES = [
    strategy_case("grid", learns=False),
    strategy_case("random", learns=False),
    strategy_case("tpe"),
    pytest.param(strategy_case("gp"), marks=pytest.mark.slow),  # ~0.1-1 s per GP trial
    strategy_case("cmaes"),
    strategy_case("nsga2", learns=False),  # population 50: no second generation in 30 trials
    strategy_case("qmc", learns=False),
    strategy_case("pg"),
    strategy_case("dqn", updates=60),  # fewer Adam steps per trial: the checks, not quality
    strategy_case("bandit"),
    pytest.param(strategy_case("auto"), marks=pytest.mark.slow),  # GP on unconditional spaces
]


@pytest.fixture(params=CASES, ids=lambda c: c.name if isinstance(c, SamplerCase) else None)
def sampler_case(request: pytest.FixtureRequest) -> SamplerCase:
    return request.param


class TestSamplerConformance(SamplerConformance):
    pass

"""The benchmark's test functions hit their documented optima (bench/testfunctions.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def tf():  # the module bench/testfunctions.py (bench/ is not a package)
    spec = importlib.util.spec_from_file_location("testfunctions", BENCH / "testfunctions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["testfunctions"] = module
    spec.loader.exec_module(module)
    return module


def test_known_optima(tf) -> None:
    fs = tf.FUNCTIONS
    for x1, x2 in [(-np.pi, 12.275), (np.pi, 2.275), (9.42478, 2.475)]:
        assert fs["branin"].f({"x1": x1, "x2": x2}) == pytest.approx(0.397887, abs=1e-5)
    x_h6 = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
    assert fs["hartmann6"].f({f"x{i}": v for i, v in enumerate(x_h6)}) == pytest.approx(
        -3.32237, abs=1e-4
    )
    assert fs["levy20_noisy"].f({f"x{i}": 1.0 for i in range(20)}) == pytest.approx(0.0)
    best = {"lr": 3e-3, "batch_tokens": 8192, "warmup_frac": 0.05, "weight_decay": 0.1,
            "schedule": "wsd", "cooldown_frac": 0.25, "beta2": 0.95}  # fmt: skip
    assert fs["tiny_gpt_like"].f(best) == pytest.approx(3.0)


def test_optima_are_minima_and_reference_is_worse(tf) -> None:
    rng = np.random.default_rng(0)
    for fn in tf.FUNCTIONS.values():
        values = [fn.f(tf.random_params(fn.space, rng)) for _ in range(300)]
        assert min(values) >= fn.f_star - 1e-9
        assert fn.f_ref(n=300) > fn.f_star

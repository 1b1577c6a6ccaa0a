"""Planning under a deployment memory limit: the stored size is counted exactly as
``lmalloc compress`` stores it, and the allocator trades size against bits by the precision
law."""

from __future__ import annotations

import numpy as np
import pytest

from lmalloc.cost.hardware import get_hardware
from lmalloc.errors import UserError
from lmalloc.model.accounting import stored_bytes
from lmalloc.model.config import GPTConfig
from lmalloc.plan.allocate import Deploy, allocate
from lmalloc.scaling.parametric import fit_parametric
from lmalloc.scaling.precision import PrecisionLaw
from lmalloc.scaling.simulate import simulate_runs

MILD = PrecisionLaw(log_c=-12.0, gamma_d=0.5, gamma_n=0.5, gamma_b=0.8,
                    boot=np.empty((0, 4)), points=0)


@pytest.fixture(scope="module")
def fit():  # type: ignore[no-untyped-def]
    runs = simulate_runs(seed=0)
    return fit_parametric(runs.N, runs.D, runs.loss, bootstrap=30, seed=0,
                          param_convention="non_embedding")


@pytest.mark.parametrize("bits", [None, 8, 4, 3, 2])
@pytest.mark.parametrize("tied", [True, False])
def test_stored_bytes_is_what_compress_stores(bits: int | None, tied: bool) -> None:
    from lmalloc.compress.quantize import QuantFormat, quantizable_layers, quantize_model
    from lmalloc.compress.quantize import size_bytes as measured
    from lmalloc.model.gpt import GPT

    cfg = GPTConfig(vocab_size=97, n_layer=2, n_head=4, d_model=48, n_kv_head=2,
                    tie_embeddings=tied)
    model = GPT(cfg)
    if bits is not None:
        fmt = QuantFormat(bits, group_size=32).name
        model = quantize_model(model, dict.fromkeys(quantizable_layers(model), fmt))
    assert stored_bytes(cfg, bits, group_size=32) == measured(model)


def _run(fit, deploy: Deploy | None):  # type: ignore[no-untyped-def]
    return allocate(fit, 1e21, get_hardware("8xH100"), vocab_size=32000, seq_len=2048,
                    batch_tokens=2**20, deploy=deploy)


def test_a_tight_limit_ships_fewer_bits_and_prices_them(fit) -> None:  # type: ignore[no-untyped-def]
    free = _run(fit, None).chosen
    cfg = GPTConfig.from_dict(free.model)
    limit = stored_bytes(cfg, None) / 3  # the free optimum does not fit unquantized
    a = _run(fit, Deploy(limit, MILD)).chosen
    assert a.deploy is not None and a.deploy["fits"]
    assert a.deploy["bytes"] <= limit and a.deploy["bits"] in (8, 4, 3, 2)
    want = MILD.predict(a.N, a.D, a.deploy["bits"]).value
    assert a.deploy["delta"]["value"] == pytest.approx(want)
    assert a.objective == pytest.approx(a.loss.value + want)
    # without a law nothing says what quantizing costs: only unquantized shapes, smaller
    plain = _run(fit, Deploy(limit, None)).chosen
    assert plain.deploy["bits"] is None and plain.deploy["bytes"] <= limit
    assert plain.N < a.N


def test_a_harsh_law_keeps_more_bits(fit) -> None:  # type: ignore[no-untyped-def]
    cfg = GPTConfig.from_dict(_run(fit, None).chosen.model)
    limit = stored_bytes(cfg, 3)  # the free optimum fits at 3 bits
    harsh = PrecisionLaw(log_c=2.0, gamma_d=0.0, gamma_n=0.0, gamma_b=1.0,
                         boot=np.empty((0, 4)), points=0)  # 3 bits cost 0.37 nats, 8: 0.002
    mild = _run(fit, Deploy(limit, MILD)).chosen
    strict = _run(fit, Deploy(limit, harsh)).chosen
    assert mild.deploy["bits"] <= 3
    assert strict.deploy["bits"] > mild.deploy["bits"] and strict.N < mild.N


def test_a_limit_below_every_model_names_the_size(fit) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="deployment limit"):
        _run(fit, Deploy(1e3, MILD))

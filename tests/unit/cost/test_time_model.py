"""The time model's machinery on synthetic measurements (recovering known parameters)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmalloc.cost.hardware import get_hardware
from lmalloc.cost.time_model import (
    PARAM_NAMES,
    StepShape,
    fit_time_model,
    predict_time,
    step_time,
)
from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig

TRUE = {"P_max": 4e10, "P_head": 2.5e10, "d_half": 120.0, "tau_half": 400.0, "e": 3e-9,
        "c_micro": 2e-4, "c_step": 2e-3, "c_param": 2e-9}


def _shapes() -> list[StepShape]:
    out = []
    for d in (32, 64, 128, 256, 512):
        for layers, b, t, v in ((1, 2, 32, 256), (4, 8, 128, 2048), (2, 16, 256, 512)):
            cfg = GPTConfig(vocab_size=v, n_layer=layers, n_head=4, d_model=d, seq_len=t)
            out.append(StepShape.of(cfg, b))
    return out


def test_fit_recovers_known_parameters() -> None:
    shapes = _shapes()
    seconds = [step_time(s, TRUE) for s in shapes]
    fit = fit_time_model(shapes, seconds)
    assert fit["rmse_log"] < 1e-4
    pred = [step_time(s, fit) for s in shapes]
    assert np.allclose(pred, seconds, rtol=1e-3)
    for name in ("P_max", "P_head", "d_half", "e"):
        assert fit[name] == pytest.approx(TRUE[name], rel=0.05), name


def test_fit_with_noise_predicts_held_out_shapes() -> None:
    rng = np.random.default_rng(0)
    shapes = _shapes()
    fit = fit_time_model(shapes[::2], [step_time(s, TRUE) * math.exp(rng.normal(0, 0.03))
                                       for s in shapes[::2]])
    errs = [abs(step_time(s, fit) / step_time(s, TRUE) - 1) for s in shapes[1::2]]
    assert float(np.median(errs)) < 0.10


def test_utilisation_rises_with_width_and_tokens() -> None:
    small = StepShape.of(GPTConfig(vocab_size=256, n_layer=2, n_head=2, d_model=32), 1, 32)
    wide = StepShape.of(GPTConfig(vocab_size=256, n_layer=2, n_head=2, d_model=512), 1, 32)
    long = StepShape.of(GPTConfig(vocab_size=256, n_layer=2, n_head=2, d_model=32), 16, 256)
    def rate(s: StepShape) -> float:
        return s.tokens * s.flops_per_token / step_time(s, TRUE)
    assert rate(wide) > 3 * rate(small) and rate(long) > 2 * rate(small)


def test_predict_time_scales_with_tokens_and_devices() -> None:
    cfg = GPTConfig(vocab_size=50304, n_layer=24, n_head=16, d_model=2048, seq_len=2048)
    one = predict_time(cfg, 1e9, get_hardware("8xH100"), batch_tokens=2**20)
    two = predict_time(cfg, 2e9, get_hardware("8xH100"), batch_tokens=2**20)
    assert two.seconds == pytest.approx(2 * one.seconds, rel=0.01)
    assert 0.2 < one.mfu < 0.55
    slow = predict_time(cfg, 1e9, get_hardware("1xH100"), batch_tokens=2**20)
    assert slow.seconds > 6 * one.seconds
    with_eval = predict_time(cfg, 1e9, get_hardware("8xH100"), batch_tokens=2**20,
                             eval_every=100, eval_tokens=2**20, checkpoint_every=500)
    assert with_eval.seconds > one.seconds and with_eval.checkpoint_seconds > 0
    ckpt = predict_time(cfg, 1e9, get_hardware("8xH100"), batch_tokens=2**20,
                        activation_checkpointing=True, parallel="fsdp")
    assert ckpt.seconds > 1.3 * one.seconds and ckpt.flops == one.flops
    with pytest.raises(UserError):
        predict_time(cfg, 0, get_hardware("h100"))


def test_param_names_are_fitted() -> None:
    fit = fit_time_model(_shapes(), [step_time(s, TRUE) for s in _shapes()])
    assert set(PARAM_NAMES) <= set(fit)


def test_profile_without_head_rate_keeps_the_old_model() -> None:
    """A profile fitted before the output-layer term: P_head falls back to P_max."""
    from dataclasses import replace

    old = {k: v for k, v in TRUE.items() if k != "P_head"}
    hw = replace(get_hardware("h100"), utilisation=old)
    from lmalloc.cost.time_model import default_params

    assert default_params(hw)["P_head"] == TRUE["P_max"]
    shape = _shapes()[4]
    assert step_time(shape, old) == pytest.approx(step_time(shape, {**old, "P_head": 4e10}))
    assert step_time(shape, TRUE) > step_time(shape, {**TRUE, "P_head": 4e10})

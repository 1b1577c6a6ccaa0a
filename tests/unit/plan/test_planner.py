"""plan.json from a known law: token counts from the budget's unit, the exact settings the
trainer runs, intervals, and the time-based allocation."""

from __future__ import annotations

import math

import pytest

from lmalloc.cost.hardware import get_hardware
from lmalloc.model.accounting import train_flops_per_token
from lmalloc.model.config import GPTConfig
from lmalloc.plan.planner import batch_for, cost_function, make_plan, to_bpb, tokens_within
from lmalloc.plan.recipe import Recipe
from lmalloc.scaling.estimate import Estimate
from lmalloc.scaling.parametric import fit_parametric
from lmalloc.scaling.simulate import simulate_runs
from lmalloc.train.config import TrainConfig

RECIPE = Recipe(seq_len=128, batch_tokens=2048, micro_batch=16)
pytestmark = pytest.mark.filterwarnings("ignore::lmalloc.scaling.ExtrapolationWarning")


@pytest.fixture(scope="module")
def fit():  # type: ignore[no-untyped-def]
    runs = simulate_runs(seed=0)
    return fit_parametric(runs.N, runs.D, runs.loss, bootstrap=30, seed=0,
                          param_convention="non_embedding")


def test_tokens_within_inverts_the_cost() -> None:
    cfg = GPTConfig(vocab_size=4096, n_layer=4, n_head=4, d_model=256, seq_len=128)
    hw = get_hardware("cpu")
    for unit, amount in (("flops", 3e13), ("seconds", 600.0)):
        cost = cost_function(unit, hw, RECIPE)
        D = tokens_within(cfg, amount, cost, RECIPE.batch_tokens)
        assert D % RECIPE.batch_tokens == 0
        assert cost(cfg, D) <= amount * 1.0001 < cost(cfg, D + 2 * RECIPE.batch_tokens)
    flops = cost_function("flops", hw, RECIPE)
    assert flops(cfg, 1000.0) == pytest.approx(train_flops_per_token(cfg, 128) * 1000)


def test_flops_plan_spends_the_budget_with_trainable_settings(fit) -> None:  # type: ignore
    plan = make_plan(fit, amount=1e15, unit="flops", hardware=get_hardware("cpu"),
                     vocab_size=4096, recipe=RECIPE, lr=0.01, warmup=0.05,
                     mup_base_width=64, tokens_per_byte=0.3, mup_base_depth=2)
    cfg = GPTConfig(vocab_size=4096, **{k: v for k, v in plan["model"].items()
                                        if k != "vocab_size"})
    train = TrainConfig.from_dict(plan["train"])  # the trainer accepts it as is
    # CompleteP: the searched lr is the proxy depth's, and the final model scales from it
    assert cfg.mup_base_depth == 2 and plan["hyperparameters"]["mup_base_depth"] == 2
    assert train.max_tokens == plan["predicted"]["D"]
    assert train.max_tokens % RECIPE.batch_tokens == 0
    spent = train_flops_per_token(cfg) * train.max_tokens
    assert 1e15 - train_flops_per_token(cfg) * RECIPE.batch_tokens < spent <= 1e15
    assert train.lr == 0.01 and cfg.mup_base_width == 64 and train.schedule == "wsd"
    loss, bpb = plan["predicted"]["loss"], plan["predicted"]["bpb"]
    assert loss["low"] <= loss["value"] <= loss["high"]
    assert bpb["value"] == pytest.approx(loss["value"] * 0.3 / math.log(2))
    assert plan["train"]["max_seconds"] is None  # no time stop for a compute budget
    assert plan["train"]["fill_time"] is False  # its length is its FLOPs


def test_time_plan_fits_the_time_and_stops_hard(fit) -> None:  # type: ignore
    hw = get_hardware("cpu")
    plan = make_plan(fit, amount=900.0, unit="seconds", hardware=hw, vocab_size=4096,
                     recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=None,
                     tokens_per_byte=0.3)
    assert plan["predicted"]["seconds"] <= 900.0
    assert plan["train"]["max_seconds"] == 900.0
    assert plan["train"]["fill_time"] is True  # the run ends at its time limit, cooled down
    feasible = [c for c in plan["allocation"]["candidates"] if c["feasible"]]
    best = min(c["loss"]["value"] for c in feasible)
    assert plan["predicted"]["loss"]["value"] == best


def test_batch_law_and_bpb() -> None:
    assert batch_for(1e10, RECIPE, 1) == RECIPE.batch_tokens  # never below the explored one
    big = batch_for(1e23, RECIPE, 8)
    assert big % (128 * 8) == 0 and 1e6 < big < 1e7  # DeepSeek's law: ~4M tokens at 1e23
    e = to_bpb(Estimate(2.0, 1.9, 2.1, 0.9), 0.25)
    assert e.value == pytest.approx(2.0 * 0.25 / math.log(2)) and e.level == 0.9


def test_degenerate_fit_is_flagged() -> None:
    from lmalloc.run.summary import fit_warnings

    assert fit_warnings({"alpha": 0.34, "beta": 0.28}) == []
    (w,) = fit_warnings({"alpha": 10.0, "beta": 0.3})
    assert "alpha = 10" in w and "model size" in w


def test_tight_memory_plan_runs_checkpointed_at_the_micro_batch_that_fits(fit) -> None:  # type: ignore
    """Long sequences in little memory: the plan's layout needs activation checkpointing, so
    the train settings carry it (the trainer runs it), the micro-batch is the one that layout
    fits, and the time counts the recomputation."""
    from lmalloc.cost.memory import HEADROOM, estimate_memory

    hw, mem = get_hardware("cpu"), 600 * 2**20  # 8 x 320 at 2048 tokens: 755 MiB plain
    recipe = Recipe(seq_len=2048, batch_tokens=8192, micro_batch=4)
    plan = make_plan(fit, amount=1e15, unit="flops", hardware=hw, vocab_size=4096,
                     recipe=recipe, lr=0.01, warmup=0.05, mup_base_width=None,
                     tokens_per_byte=0.3, memory_bytes=mem)
    par = plan["parallelism"]
    train = TrainConfig.from_dict(plan["train"])
    assert par["activation_checkpointing"] and train.activation_checkpointing
    assert train.micro_batch == par["micro_batch"]
    cfg = GPTConfig(vocab_size=4096, **{k: v for k, v in plan["model"].items()
                                        if k != "vocab_size"})
    accum = recipe.batch_tokens // (2048 * train.micro_batch)
    fits = estimate_memory(cfg, train.micro_batch, 2048, hw.default_dtype,
                           activation_checkpointing=True, grad_accum=accum)
    plain = estimate_memory(cfg, 1, 2048, hw.default_dtype, grad_accum=recipe.batch_tokens // 2048)
    assert fits.peak <= HEADROOM * mem < plain.peak
    slow = cost_function("seconds", hw, recipe, activation_checkpointing=True)(cfg, 1e6)
    assert slow > 1.2 * cost_function("seconds", hw, recipe)(cfg, 1e6)


def test_plan_reports_epochs(fit) -> None:  # type: ignore[no-untyped-def]
    common = dict(amount=1e16, unit="flops", hardware=get_hardware("cpu"), vocab_size=4096,
                  recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=64, tokens_per_byte=0.3)
    assert make_plan(fit, **common)["data"] is None
    plan = make_plan(fit, unique_tokens=2e6, **common)
    data = plan["data"]
    assert data["epochs"] == pytest.approx(plan["predicted"]["D"] / 2e6)
    assert data["epochs"] > 4 and "passes" in data["note"] and "fresh" in data["note"]
    assert data["effective_tokens"] < plan["predicted"]["D"]


def _hp_laws():  # type: ignore[no-untyped-def]
    """Lr and batch laws fitted on a simulated search at two scales (lr* = 0.5 C^-0.2,
    batch* = 0.3 C^0.35), with the bowl curvature 0.08 / 0.04 the interval prices."""
    import numpy as np

    from lmalloc.scaling.hyperparams import fit_hyperparameter_laws

    rng = np.random.default_rng(0)
    C = np.repeat([1e12, 1e13], 40)
    lr_s, bs_s = 0.5 * C**-0.2, 0.3 * C**0.35
    lr, bs = lr_s * np.exp(rng.uniform(-2, 2, C.size)), bs_s * np.exp(rng.uniform(-2, 2, C.size))
    loss = 4.0 + 0.08 * np.log(lr / lr_s) ** 2 + 0.04 * np.log(bs / bs_s) ** 2
    return fit_hyperparameter_laws(C, loss + 0.003 * rng.standard_normal(C.size), lr=lr,
                                   batch=bs, bootstrap=50)


def test_hp_laws_set_lr_and_widen_the_interval(fit) -> None:  # type: ignore[no-untyped-def]
    laws = _hp_laws()
    common = dict(amount=1e15, unit="flops", hardware=get_hardware("cpu"), vocab_size=4096,
                  recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=64, tokens_per_byte=0.3)
    plain = make_plan(fit, **common)
    assert plain["predicted"]["interval"] is None
    assert plain["hyperparameters"]["lr_source"] == "search"
    plan = make_plan(fit, seed_sd=0.01, hp_laws=laws, **common)
    C = plan["predicted"]["flops"]
    assert plan["train"]["lr"] == pytest.approx(float(laws.lr.predict(C)))
    assert plan["train"]["lr"] == pytest.approx(0.5 * C**-0.2, rel=0.15)
    assert "lr law" in plan["hyperparameters"]["lr_source"]
    inter, law, loss = (plan["predicted"][k] for k in ("interval", "law_loss", "loss"))
    assert set(inter["parts"]) == {"law", "seed", "lr", "batch"}
    assert loss["low"] == inter["low"] < law["low"] and loss["high"] == inter["high"] > law["high"]
    assert loss["value"] == law["value"]


def test_batch_for_uses_the_runs_law_else_names_the_prior() -> None:
    laws = _hp_laws()
    b = batch_for(1e15, RECIPE, 1, laws)
    want = 0.3 * 1e15**0.35
    assert b % RECIPE.seq_len == 0 and want / 1.5 <= b <= want * 1.5
    assert batch_for(1e15, RECIPE, 1) == batch_for(1e15, RECIPE, 1, None)


def _horizon_laws(noise: float, spread: float = 2.0):  # type: ignore[no-untyped-def]
    """An lr law in the horizon D from a simulated search of one proxy at two trial lengths
    (lr* = 0.05 D^-0.3, bowl curvature 0.1)."""
    import numpy as np

    from lmalloc.scaling.hyperparams import fit_hyperparameter_laws

    rng = np.random.default_rng(1)
    D = np.repeat([1e5, 4e5], 24)
    best = 0.05 * D**-0.3
    lr = best * np.exp(rng.uniform(-spread, spread, D.size))
    loss = 4.0 + 0.1 * np.log(lr / best) ** 2 + noise * rng.standard_normal(D.size)
    return fit_hyperparameter_laws(D, loss, lr=lr, scale_name="D", bootstrap=100)


def test_an_lr_law_in_the_horizon_sets_the_final_runs_lr_from_its_tokens(
        fit) -> None:  # type: ignore[no-untyped-def]
    laws = _horizon_laws(noise=0.002)
    common = dict(amount=1e15, unit="flops", hardware=get_hardware("cpu"), vocab_size=4096,
                  recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=64, tokens_per_byte=0.3)
    plan = make_plan(fit, hp_laws=laws, **common)
    D = plan["predicted"]["D"]
    assert plan["train"]["lr"] == pytest.approx(float(laws.lr.predict(D)))  # at its tokens
    assert plan["train"]["lr"] == pytest.approx(0.05 * D**-0.3, rel=0.2)
    assert "·D^" in plan["hyperparameters"]["lr_source"]
    assert "lr" in plan["predicted"]["interval"]["parts"]


def test_an_lr_law_the_two_horizons_do_not_pin_down_keeps_the_searched_lr(
        fit) -> None:  # type: ignore[no-untyped-def]
    laws = _horizon_laws(noise=0.3)  # trial noise swamps the bowl: exponent anywhere
    p = laws.lr.estimates()["p"]
    assert p.low < -1.0 or p.high > 0.25 or any(m != "quadratic" for *_, m in laws.lr.optima)
    common = dict(amount=1e15, unit="flops", hardware=get_hardware("cpu"), vocab_size=4096,
                  recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=64, tokens_per_byte=0.3)
    plan = make_plan(fit, hp_laws=laws, **common)
    assert plan["train"]["lr"] == 0.01
    assert plan["hyperparameters"]["lr_source"].startswith("search (the lr law")
    assert "was not used" in plan["hyperparameters"]["lr_source"]
    # the unused law's spread is not the searched lr's: no lr part, listed as not measured
    interval = plan["predicted"]["interval"]
    assert "lr" not in interval["parts"] and "lr" in interval["not_measured"]


def test_the_interval_stops_at_the_loss_of_a_uniform_prediction(
        fit) -> None:  # type: ignore[no-untyped-def]
    import math

    wild = {"available": True, "rms_log_error": 0.5, "factor": 2.0, "c_top": 1e9}
    common = dict(amount=1e15, unit="flops", hardware=get_hardware("cpu"), vocab_size=4096,
                  recipe=RECIPE, lr=0.01, warmup=0.05, mup_base_width=64, tokens_per_byte=0.3)
    plan = make_plan(fit, extrapolation=wild, **common)
    interval = plan["predicted"]["interval"]
    assert interval["high"] == pytest.approx(math.log(4096)) and "uniform" in interval["capped"]
    assert plan["predicted"]["loss"]["high"] == pytest.approx(math.log(4096))
    assert interval["low"] < plan["predicted"]["law_loss"]["low"]

"""``plan.json``: the final run's allocation from the fitted law, the budget and the hardware.

A budget is spent in one *unit*: FLOPs when the user gave compute (``1e15flops``), else
seconds (``15m``, ``8xH100:24h``). In seconds the planner does not convert time to FLOPs at an
assumed utilisation: for every candidate shape it asks the time model how many tokens that
shape trains in the time left (small models run at lower utilisation, so the time-optimal
model is not the FLOP-optimal one), and the allocation minimises the predicted loss over shapes
with those token counts. In FLOPs every shape gets ``D = C / flops_per_token``.

The plan also fixes the hyperparameters: learning rate and warmup from the small-scale search,
transferred by μP (``mup_base_width``), the run's batch and sequence length, and a WSD schedule
like the ladder's, so that the predicted loss is the loss of the kind of run the ladder
measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmalloc.cost.hardware import HardwareProfile
from lmalloc.cost.memory import recommend
from lmalloc.cost.time_model import predict_time
from lmalloc.model.accounting import train_flops_per_token
from lmalloc.model.config import GPTConfig
from lmalloc.plan.allocate import Deploy, allocate
from lmalloc.plan.recipe import Recipe, SearchResult
from lmalloc.scaling.estimate import Estimate
from lmalloc.scaling.hyperparams import HyperparameterLaws
from lmalloc.scaling.parametric import ParametricFit

TIME_SAFETY = 0.9  # plan the final run for 90 % of the time left: the time model errs ~13 %


def cost_function(unit: str, hw: HardwareProfile, recipe: Recipe, evals: int = 1,
                  time_scale: float = 1.0, activation_checkpointing: bool = False,
                  ) -> Callable[[GPTConfig, float], float]:
    """``cost(cfg, tokens)`` in the budget's unit: training FLOPs, or predicted seconds
    (including ``evals`` evaluations of ``recipe.eval_tokens``, none for 0, and the
    recomputation of ``activation_checkpointing``) times ``time_scale``, the
    measured/predicted ratio of the run's own trainings (see ``RunContext.time_scale``)."""
    if unit == "flops":
        return lambda cfg, tokens: train_flops_per_token(cfg, recipe.seq_len) * tokens

    def seconds(cfg: GPTConfig, tokens: float) -> float:
        steps = max(1, math.ceil(tokens / recipe.batch_tokens))
        return predict_time(cfg, max(tokens, 1.0), hw, batch_tokens=recipe.batch_tokens,
                            micro_batch=recipe.micro_batch, seq_len=recipe.seq_len,
                            eval_every=max(1, steps // max(evals, 1)),
                            eval_tokens=recipe.eval_tokens if evals else 0,
                            activation_checkpointing=activation_checkpointing,
                            ).seconds * time_scale

    return seconds


def eval_seconds(hw: HardwareProfile, recipe: Recipe) -> Callable[[GPTConfig, int], float]:
    """``seconds(cfg, val_tokens)``: the predicted time of one evaluation (uncalibrated)."""
    return lambda cfg, n: predict_time(
        cfg, float(recipe.batch_tokens), hw, batch_tokens=recipe.batch_tokens,
        micro_batch=recipe.micro_batch, seq_len=recipe.seq_len, eval_tokens=n).eval_seconds


def tokens_within(cfg: GPTConfig, amount: float, cost: Callable[[GPTConfig, float], float],
                  batch_tokens: int) -> int:
    """The most tokens (a whole number of batches) ``cfg`` trains for ``amount`` of budget;
    cost is affine in tokens, so two evaluations solve it."""
    lo, hi = 100.0 * batch_tokens, 200.0 * batch_tokens
    c_lo, c_hi = cost(cfg, lo), cost(cfg, hi)
    per_token = (c_hi - c_lo) / (hi - lo)
    tokens = lo + (amount - c_lo) / per_token if per_token > 0 else 0.0
    return int(max(0.0, tokens) // batch_tokens) * batch_tokens


def to_bpb(loss: Estimate, tokens_per_byte: float) -> Estimate:
    """Nats per token → bits per byte (tokenizer-independent)."""
    f = tokens_per_byte / math.log(2)
    return Estimate(loss.value * f, loss.low * f, loss.high * f, loss.level)


def make_plan(
    fit: ParametricFit, *, amount: float, unit: str, hardware: HardwareProfile,
    vocab_size: int, recipe: Recipe, lr: float, warmup: float, mup_base_width: int | None,
    tokens_per_byte: float, mup_base_depth: int | None = None,
    memory_bytes: float | None = None, source: str = "",
    time_scale: float = 1.0, deploy: Deploy | None = None, unique_tokens: float | None = None,
    seed_sd: float | None = None, hp_laws: HyperparameterLaws | None = None,
    size_rule: dict[str, Any] | None = None, extrapolation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The final run for ``amount`` of budget in ``unit``: the allocation (shape, tokens,
    predicted loss with its interval, time, memory, parallelism, sensitivity) and the exact
    ``model`` and ``train`` settings ``lmalloc train`` runs. With ``unique_tokens`` (the
    training split's size) repetition is priced in and ``data`` reports the epochs.

    With ``hp_laws`` (fitted from the run's searches) the learning rate is the lr law's value
    at the final run's compute, not the searched ``lr``. With ``seed_sd`` (sd of one run's
    log-loss, measured), ``hp_laws`` and/or ``extrapolation`` (laws.json's backtest in
    compute) the predicted loss's interval is widened by the seed and hyperparameter noise
    and the law's extrapolation error (:func:`~lmalloc.scaling.intervals.predicted_interval`):
    ``predicted.loss`` is the widened interval, ``predicted.law_loss`` the law's alone and
    ``predicted.interval`` names the parts.

    ``size_rule`` (:func:`~lmalloc.scaling.degeneracy.size_rule` of the run's laws) says
    where N comes from when the L(N, D) fit is degenerate: approach 2's ``N* = k_N C^a``
    when the ladder's IsoFLOP branches give it, the size every IsoFLOP level preferred, else
    the law's own choice;
    ``allocation.size_source`` names it."""
    cost = cost_function(unit, hardware, recipe, evals=recipe.evals_per_run,
                         time_scale=time_scale)
    usable = amount * (TIME_SAFETY if unit == "seconds" else 1.0)
    mem = memory_bytes if memory_bytes is not None else hardware.memory_bytes

    def tokens_for(cfg: GPTConfig) -> float:
        """Tokens at the micro-batch the memory model allows this shape (as it will run)."""
        rec = recommend(cfg, mem, recipe.batch_tokens, recipe.seq_len,
                        hardware.default_dtype, hardware.count)
        cost_cfg = cost_function(unit, hardware, replace(recipe, micro_batch=rec.micro_batch),
                                 evals=recipe.evals_per_run, time_scale=time_scale,
                                 activation_checkpointing=rec.activation_checkpointing)
        return float(tokens_within(cfg, usable, cost_cfg, recipe.batch_tokens))

    flops_guess = usable if unit == "flops" else _flops_in(fit, usable, cost, hardware, recipe,
                                                           vocab_size)
    rule = size_rule or {"source": "law"}
    n_target = (rule["k_N"] * flops_guess ** rule["a"] if rule["source"] == "approach 2"
                else rule.get("N"))
    alloc = allocate(
        fit, flops_guess, hardware, vocab_size, recipe.seq_len, recipe.batch_tokens,
        n_target=n_target,
        memory_bytes=memory_bytes, precision=hardware.default_dtype, tokens_for=tokens_for,
        # uncalibrated, like allocate's own time model; catches e.g. a memory-bound micro-batch
        seconds=usable / time_scale if unit == "seconds" else None, deploy=deploy,
        unique_tokens=unique_tokens,
    )
    chosen = alloc.chosen
    lr, lr_source = _lr_from(hp_laws, chosen.flops, chosen.D, lr)
    loss, interval = chosen.loss, None
    if seed_sd is not None or hp_laws is not None or extrapolation is not None:
        interval = _widened(chosen.loss, seed_sd, hp_laws, chosen.flops, chosen.D,
                            extrapolation, lr_from_law=lr_source.startswith("lr law"),
                            ceiling=math.log(vocab_size))
        loss = Estimate(chosen.loss.value, interval["low"], interval["high"], chosen.loss.level)
    model = {**chosen.model, "mup_base_width": mup_base_width, "mup_base_depth": mup_base_depth}
    D = int(chosen.D)
    steps = D // recipe.batch_tokens
    train = recipe.train_config(
        lr=lr, warmup=warmup, max_tokens=D, eval_every=max(1, steps // recipe.evals_per_run),
        checkpoint_every=max(1, steps // 10), micro_batch=chosen.micro_batch,
        activation_checkpointing=chosen.activation_checkpointing,  # the layout that fits
        # a hard stop; the plan itself uses TIME_SAFETY of it, and the run fills the rest:
        # the idle demo's final run, planned with a time scale 1.18 from short trainings, ran
        # at 1.03 and ended at 79 % of its time
        max_seconds=amount if unit == "seconds" else None, fill_time=unit == "seconds",
    ).to_dict()
    return {
        "model": model,
        "train": train,
        "allocation": {**alloc.to_dict(), "size_source": rule},
        "predicted": {
            "loss": loss.to_dict(),
            "bpb": to_bpb(loss, tokens_per_byte).to_dict(),
            "law_loss": chosen.loss.to_dict(), "interval": interval,
            "seconds": chosen.seconds * time_scale, "time_scale": time_scale,
            "memory_bytes": chosen.memory_bytes,
            "flops": chosen.flops, "N": chosen.N, "D": D,
        },
        "parallelism": {"devices": hardware.count, "parallel": chosen.parallel,
                        "micro_batch": chosen.micro_batch,
                        "activation_checkpointing": chosen.activation_checkpointing},
        "hyperparameters": {"lr": lr, "warmup": warmup, "mup_base_width": mup_base_width,
                            "mup_base_depth": mup_base_depth,
                            "batch_tokens": recipe.batch_tokens, "source": source,
                            "lr_source": lr_source},
        "budget": {"amount": amount, "unit": unit, "hardware": hardware.name},
        "param_convention": fit.param_convention,
        "data": _data_section(chosen.D, unique_tokens, chosen.effective_D),
        "deploy": None if deploy is None else {
            **(chosen.deploy or {}), "memory_bytes": deploy.memory_bytes,
            "bpb": to_bpb(Estimate.from_dict(chosen.deploy["loss"]), tokens_per_byte).to_dict()
            if chosen.deploy else None,
            "law": None if deploy.law is None else {  # its bootstrap is in precision.json
                k: v for k, v in deploy.law.to_dict().items() if k != "boot"}},
    }


LR_HORIZON_EXPONENTS = (-1.0, 0.25)
"""Where an lr law in the horizon D may put its exponent's whole bootstrap interval before the
plan extrapolates with it: the optimal learning rate falls with the number of tokens, slower
than 1/D (published fits of lr*(D) at fixed N lie well inside); an interval reaching outside
says the two horizons did not pin it down, and the searched lr is kept."""


def _lr_from(hp_laws: HyperparameterLaws | None, flops: float, tokens: float, lr: float,
             ) -> tuple[float, str]:
    """The lr law's value at the final run (its compute, or its tokens for a law in the
    horizon D), or the searched ``lr``; and which it is, with the reason."""
    if hp_laws is None or hp_laws.lr is None or hp_laws.scale not in ("C", "D"):
        return lr, "search"
    law = hp_laws.lr
    at = flops if law.scale == "C" else tokens
    if law.scale == "D":
        p = law.estimates()["p"]
        lo, hi = LR_HORIZON_EXPONENTS
        untrusted = [s for s, _, how in law.optima if how != "quadratic"]
        if untrusted or not (lo <= p.low and p.high <= hi):
            why = (f"no bowl in lr at D = {', '.join(f'{s:.3g}' for s in untrusted)}"
                   if untrusted else f"its exponent's interval [{p.low:.2g}, {p.high:.2g}] "
                   f"is not inside [{lo:g}, {hi:g}]")
            return lr, f"search (the lr law {law.k:.3g}·D^{law.p:.3g} was not used: {why})"
    return float(law.predict(at)), f"lr law {law.k:.3g}·{law.scale}^{law.p:.3g} ({law.source})"


def _widened(est: Estimate, seed_sd: float | None, hp_laws: HyperparameterLaws | None,
             flops: float, tokens: float, extrapolation: dict[str, Any] | None, *,
             lr_from_law: bool, ceiling: float) -> dict[str, Any]:
    """The law's interval widened by the measured seed, hyperparameter and extrapolation
    noise. An lr law the plan did not use prices nothing (its spread is not the searched lr's:
    listed as not measured). The upper end stops at ``ceiling`` (ln of the vocabulary: the
    loss of a uniform prediction, which no trained model's law should exceed)."""
    from lmalloc.scaling.intervals import predicted_interval

    hps = [] if hp_laws is None else [
        (law.name, law.curvature if law.name != "lr" or lr_from_law else None,
         law.log_sd(tokens if law.scale == "D" else flops))
        for law in (hp_laws.lr, hp_laws.batch) if law is not None]
    out = predicted_interval(est, seed_sd, hps,
                             None if extrapolation is None else (extrapolation, flops))
    if out["high"] > ceiling > est.value:
        out["high"], out["capped"] = ceiling, (
            f"the upper end stops at ln(vocabulary) = {ceiling:.3g}, the loss of a uniform "
            "prediction")
    return out


def _data_section(D: float, unique: float | None, effective: float | None,
                  ) -> dict[str, Any] | None:
    """Epochs over the unique training tokens and what repetition costs (None: not known)."""
    if unique is None:
        return None
    from lmalloc.scaling.repetition import MANY_EPOCHS

    e = D / unique
    note = ("" if e <= 1 else
            f"{e:.2g} passes over the training data: priced as {effective:.3g} effective "
            "tokens (Muennighoff et al. 2023)" + (
                "; beyond ~4 passes repeated data is worth clearly less than fresh, and "
                "validation loss can stall while training loss falls" if e > MANY_EPOCHS
                else ""))
    return {"unique_tokens": unique, "tokens": D, "epochs": e, "effective_tokens": effective,
            "note": note}


def _flops_in(fit: ParametricFit, seconds: float, cost: Callable[[GPTConfig, float], float],
              hw: HardwareProfile, recipe: Recipe, vocab_size: int) -> float:
    """FLOPs the compute-optimal shape trains in ``seconds`` (a fixed point: the shape sets
    the utilisation, the utilisation sets the compute); only centres the allocation's grid."""
    from lmalloc.model.shape import shape_for
    from lmalloc.scaling.optimal import compute_optimal

    C = seconds * hw.peak(hw.default_dtype) * hw.count * 0.1
    for _ in range(4):
        N = compute_optimal(fit, C).N.value
        if not (math.isfinite(N) and N > 0):  # a term the fit lost (A → 0): start at its data
            N = fit.input_range["N"][0]
        cfg = shape_for(N, vocab_size=vocab_size, seq_len=recipe.seq_len,
                        non_embedding=fit.param_convention == "non_embedding")
        D = tokens_within(cfg, seconds, cost, recipe.batch_tokens)
        C = max(train_flops_per_token(cfg, recipe.seq_len) * max(D, recipe.batch_tokens), 1.0)
    return C


def batch_for(flops: float, recipe: Recipe, devices: int,
              hp_laws: HyperparameterLaws | None = None) -> int:
    """Global batch (tokens) for a bigger run, a power of two sequences per device: the run's
    own batch law B*(C) when ``hp_laws`` has one, else DeepSeek LLM's published law
    B*(C) = 0.292 C^0.3271 (Bi et al. 2024, arXiv:2401.02954, eq. 1) as a named prior, never
    below the exploration's batch (the exploration searched no batch size)."""
    from lmalloc.scaling.hyperparams import published_value

    per_step = recipe.seq_len * devices
    if hp_laws is not None and hp_laws.batch is not None and hp_laws.scale == "C":
        b = max(float(per_step), float(hp_laws.batch.predict(flops)))
    else:
        b = max(float(recipe.batch_tokens), published_value("deepseek", "batch", C=flops))
    sequences = 2 ** max(0, round(math.log2(b / per_step)))  # micro-batches divide it
    return int(sequences * per_step)


def plan_from_run(run_dir: str | Path, budget: str, hardware: str | None = None,
                  out: str | Path | None = None) -> dict[str, Any]:
    """``lmalloc plan --budget ... --from RUN``: plan a (bigger) run from a finished
    exploration's laws and hyperparameters; writes the plan (default ``RUN/plans/<budget>.json``)
    and returns it with its path."""
    from lmalloc.cost.budget import parse_budget
    from lmalloc.cost.hardware import get_hardware
    from lmalloc.data.shards import TokenData
    from lmalloc.errors import UserError
    from lmalloc.layout import LAWS_JSON, SEARCH_JSON
    from lmalloc.rundir import RunDir, atomic_write_json
    from lmalloc.scaling import load_laws
    from lmalloc.scaling.degeneracy import size_rule

    run = RunDir(run_dir)
    laws_path, search_path = run.path(LAWS_JSON), run.path(SEARCH_JSON)
    if not laws_path.exists() or not search_path.exists():
        raise UserError(f"{run.root} has no finished exploration (laws.json and search.json): "
                        "run `lmalloc run` there first, or `lmalloc fit` for laws alone")
    laws = load_laws(laws_path)
    fit = laws.get("parametric")
    if not isinstance(fit, ParametricFit):
        raise UserError(f"{laws_path} holds no parametric fit")
    hp = laws.get("hyperparameters")
    hp_laws = hp if isinstance(hp, HyperparameterLaws) else None
    opts = run.manifest().get("run_options", {})
    recipe = Recipe(**opts["recipe"]) if "recipe" in opts else Recipe()
    b = parse_budget(budget, hardware=hardware)
    hw = get_hardware(b.hardware, b.devices)
    unit, amount = b.unit_total()
    flops = b.flops if b.flops is not None else amount
    recipe = replace(recipe, batch_tokens=batch_for(flops, recipe, hw.count, hp_laws))
    found = SearchResult.load(search_path, recipe)
    data = TokenData(run.data).split("val")
    plan = make_plan(
        fit, amount=amount, unit=unit, hardware=hw,
        vocab_size=TokenData(run.data).vocab_size, recipe=recipe, lr=found.lr,
        warmup=found.warmup, mup_base_width=found.base_width, mup_base_depth=found.base_depth,
        tokens_per_byte=data.num_tokens / max(1, data.num_bytes), memory_bytes=b.memory_bytes,
        source=f"{run.root}: search at width {found.base_width}, μP; batch from "
               + ("the run's batch law" if hp_laws is not None and hp_laws.batch is not None
                  else "DeepSeek's published B*(C) law (a prior)"),
        hp_laws=hp_laws, size_rule=size_rule(laws), extrapolation=laws.get("extrapolation"),
    )
    slug = "".join(c if c.isalnum() else "-" for c in b.text).strip("-")
    path = Path(out) if out is not None else run.path(f"plans/{slug}.json")
    atomic_write_json(path, plan)
    return {**plan, "path": str(path)}

"""The stages of ``lmalloc run``, one function each, and their registry :data:`REGISTRY`.

A stage reads what it needs from the :class:`~lmalloc.run.context.RunContext`, writes its
artifact atomically and records itself in the manifest (``RunDir.record_stage``); the pipeline
skips a recorded stage on a rerun. Budget: a stage that trains charges the ledger itself, run
by run; the pipeline charges the others their elapsed time. Each exploration stage gets what
the split assigned it less what the stages before overspent, and the final run gets the
allowance's rest less its one reserve, so the whole run stays inside the budget (up to the
time model's error, which the final run's hard time limit bounds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmalloc.errors import UserError
from lmalloc.layout import (
    COMPRESSED_RESULT,
    DEPLOY_STAGES,
    EVAL_JSON,
    LADDER_CSV,
    LADDER_JSON,
    LAWS_JSON,
    PLAN_JSON,
    PRECISION_JSON,
    PROFILE_JSON,
    SEARCH_JSON,
    SPLIT_JSON,
    STAGES,
)
from lmalloc.run.budget_bar import BudgetBar
from lmalloc.run.context import RunContext
from lmalloc.run.summary import fit_warnings, write_summary
from lmalloc.rundir import atomic_write_json, read_json

if TYPE_CHECKING:
    from lmalloc.plan.ladder import Ladder

SEED_REPEAT_SHARE = 0.05
"""Of the ladder's share, kept for one seed repeat of its cheapest point (the seed noise the
plan's interval carries); a repeat that would not fit is skipped and the plan says so."""
HORIZON_SHARE = 0.25
"""Of the search's share, spent first on a second study at :data:`HORIZON_RATIO` times shorter
trials: with the main study's, the best learning rate at two training horizons, from which the
fit stage fits the lr law lr*(D) (μP and CompleteP carry lr across width and depth; what is left
is its dependence on the number of tokens). It trains every trial to the end (no pruner): its
8 or so trials are the points of a bowl in log lr, where ASHA would complete 2 or 3."""
HORIZON_RATIO = 4
HORIZON_STUDY = "horizon"
LADDER_FLOOR_HALVINGS = 2
"""When the budget cannot pay for a ladder of ``Recipe.min_params``-sized models (a slow or
busy machine), the split halves that floor up to this many times before giving up."""


@dataclass(frozen=True)
class Stage:
    """One step of the run: ``run(ctx)``, and how the pipeline treats it."""

    name: str
    run: Callable[[RunContext], None]
    charges_itself: bool = False  # else the pipeline charges its elapsed time
    skip: Callable[[RunContext], bool] = lambda _ctx: False  # does not apply to this run
    done: Callable[[RunContext], bool] | None = None  # default: recorded in the manifest
    title: str = ""  # shown after the stage's name

    def is_done(self, ctx: RunContext) -> bool:
        return self.done(ctx) if self.done is not None else ctx.done(self.name)


def prepare(ctx: RunContext) -> None:
    from lmalloc.data.config import PrepareConfig
    from lmalloc.data.pipeline import prepare_run

    prepare_run(ctx.run.root, list(ctx.options.data) or None,
                PrepareConfig(vocab_size=ctx.options.vocab_size), progress=ctx.progress)


def profile(ctx: RunContext) -> None:
    from lmalloc.cost.profile import profile_machine
    from lmalloc.train.device import device_type

    t = time.perf_counter()
    prof = profile_machine("local", device=device_type())
    prof.save(ctx.run.path(PROFILE_JSON))
    ctx.run.charge("profile", 0.0, time.perf_counter() - t)
    ctx.run.record_stage("profile", out=PROFILE_JSON)


def split(ctx: RunContext) -> None:
    from lmalloc.plan.ladder import LadderBudgetError
    from lmalloc.plan.planner import cost_function, tokens_within
    from lmalloc.plan.split import choose_split_lowering_floor

    a, recipe = ctx.allowance, ctx.recipe
    unit = "s" if a.unit == "seconds" else "FLOPs"
    used = ", ".join(f"{st} {a.spent(st):.4g} {unit}" for st in ("prepare", "profile")
                     if a.spent(st)) or "nothing"
    if a.left() <= 0:  # a clear error naming what used the budget, not a negative budget
        raise UserError(
            f"the budget {a.text!r} ({a.total:.4g} {unit}) was used up before exploring "
            f"({used}); give a larger budget"
            + ("" if ctx.options.hardware else ", or --hardware NAME to skip profiling"))
    check_sequences(ctx)
    cost = ctx.cost()
    flops_cost = cost_function("flops", ctx.hardware, recipe)

    def final_flops(amount: float) -> float:
        if a.unit == "flops":
            return amount
        from lmalloc.model.shape import shape_for

        # seconds → FLOPs at a representative 1e6-parameter shape: only the split's
        # comparison of fractions needs it; the plan stage allocates per shape
        cfg = shape_for(1e6, vocab_size=ctx.vocab, seq_len=recipe.seq_len)
        return flops_cost(cfg, tokens_within(cfg, amount, cost, recipe.batch_tokens))

    try:
        chosen, floor = choose_split_lowering_floor(
            a.left(), cost, final_flops, ctx.vocab, recipe.seq_len, recipe.batch_tokens,
            min_params=recipe.min_params, halvings=LADDER_FLOOR_HALVINGS,
            cooldown_frac=recipe.cooldown_frac)
    except LadderBudgetError as e:
        raise UserError(f"{e} (amounts in {unit}: {a.left():.4g} of the {a.total:.4g} "
                        f"budget were left after {used})") from None
    if floor < recipe.min_params:
        ctx.say(f"[yellow]warning:[/] on this machine the budget leaves no room for a "
                f"ladder of models of >= {recipe.min_params:.3g} parameters; the "
                f"ladder starts at {floor:.3g} instead (a larger budget gives a better fit)")
    doc = {**chosen.to_dict(), "unit": a.unit, "total": a.total, "spent_before": a.spent(),
           "min_params": floor}
    atomic_write_json(ctx.run.path(SPLIT_JSON), doc)
    ctx.run.update_manifest(budget_split={
        "unit": a.unit, "total": a.total, "explore_fraction": chosen.explore_fraction,
        "search": chosen.search_budget, "ladder": chosen.ladder_budget,
        "final": chosen.final_budget})
    ctx.run.record_stage("split", out=SPLIT_JSON)


def check_sequences(ctx: RunContext) -> None:
    """Refuse, before anything trains, a recipe whose sequence is longer than the prepared
    data holds: training draws windows of ``seq_len + 1`` tokens from the train split and
    evaluation reads them from the val split, neither across a shard's end."""
    from lmalloc.data.shards import TokenData

    data, need = TokenData(ctx.run.data), ctx.recipe.seq_len + 1
    for name in ("train", "val"):
        longest = int(max(data.split(name).lengths, default=0))
        if longest < need:
            raise UserError(
                f"the {name} split holds no sequence of seq_len {ctx.recipe.seq_len} (+1 "
                f"target): its longest shard has {longest} tokens; give a shorter --seq-len "
                f"(at most {max(longest - 1, 0)}) or more data")


def _split_doc(ctx: RunContext) -> dict[str, Any]:
    doc: dict[str, Any] = read_json(ctx.run.path(SPLIT_JSON), "budget split")
    return doc


def search(ctx: RunContext) -> None:
    from lmalloc.model.config import GPTConfig
    from lmalloc.plan.ladder import Ladder
    from lmalloc.plan.planner import tokens_within
    from lmalloc.run.explore import run_search_stage

    recipe, unit = ctx.recipe, ctx.allowance.unit
    share = float(_split_doc(ctx)["search_budget"])
    smallest = min(Ladder.from_dict(_split_doc(ctx)["ladder"]).runs, key=lambda r: r.N)
    # μP in width and CompleteP in depth around the proxy: the learning rate found here
    # transfers to the ladder's and the final run's wider *and* deeper shapes
    proxy = {**smallest.model, "mup_base_width": smallest.model["d_model"],
             "mup_base_depth": smallest.model["n_layer"]}
    cost = ctx.cost(recipe.evals_per_run)
    trial_tokens = max(4 * recipe.batch_tokens, tokens_within(
        GPTConfig.from_dict(proxy), share / 8, cost, recipe.batch_tokens))
    short = trial_tokens // HORIZON_RATIO // recipe.batch_tokens * recipe.batch_tokens

    def seconds(tokens: int) -> float:  # a whole trial's, for a time budget (else 0)
        return cost(GPTConfig.from_dict(proxy), tokens) if unit == "seconds" else 0.0

    with BudgetBar(ctx.run, "search", share, unit, ctx.progress) as bar:
        horizon = None
        if short >= 4 * recipe.batch_tokens:  # else too short to say anything about lr
            horizon = run_search_stage(ctx.run, proxy, recipe, budget=HORIZON_SHARE * share,
                                       unit=unit, trial_tokens=short,
                                       hardware=ctx.hardware_name, on_poll=bar.update,
                                       study_name=HORIZON_STUDY, pruner="none",
                                       trial_seconds=seconds(short))
            horizon["trial_tokens"] = short
        summary = run_search_stage(ctx.run, proxy, recipe, budget=share, unit=unit,
                                   trial_tokens=trial_tokens, hardware=ctx.hardware_name,
                                   on_poll=bar.update, trial_seconds=seconds(trial_tokens))
    summary["proxy"] = proxy
    summary["trial_tokens"] = trial_tokens
    summary["horizon"] = horizon
    atomic_write_json(ctx.run.path(SEARCH_JSON), summary)
    ctx.run.record_stage("search", out=SEARCH_JSON, best=summary["best_params"])


def ladder(ctx: RunContext) -> None:
    from lmalloc.plan.ladder import Ladder
    from lmalloc.run.explore import LadderAllowance, run_ladder_stage, run_seed_repeat

    a, doc = ctx.allowance, _split_doc(ctx)
    path = ctx.run.path(LADDER_JSON)
    # what the search left of the exploration share
    share = float(doc["search_budget"]) + float(doc["ladder_budget"]) - a.spent("search")
    if path.exists():  # resuming: the design is fixed once the first run started
        design = Ladder.from_dict(read_json(path, "ladder design"))
    else:
        # a seed repeat of the cheapest point is paid from the share's last few per cent
        design = _redesign_ladder(ctx, (1 - SEED_REPEAT_SHARE) * share,
                                  Ladder.from_dict(doc["ladder"]),
                                  float(doc.get("min_params", ctx.recipe.min_params)))
        atomic_write_json(path, design.to_dict())
    found = ctx.search
    allow = LadderAllowance(share, a.unit, scale=ctx.time_scale)
    with BudgetBar(ctx.run, "ladder", share, a.unit, ctx.progress) as bar:
        rows = run_ladder_stage(ctx.run, design, ctx.recipe, lr=found.lr, warmup=found.warmup,
                                mup_base_width=found.base_width,
                                mup_base_depth=found.base_depth, cost=ctx.cost(calibrated=False),
                                allow=allow, on_size=bar.update, say=ctx.say)
        repeat = run_seed_repeat(ctx.run, design, ctx.recipe, found.lr, found.warmup,
                                 found.base_width, ctx.cost(), rows, found.base_depth,
                                 allowed=share - a.spent("ladder"))
    ctx.run.record_stage("ladder", out=LADDER_CSV, points=len(rows), share=share,
                         time_scale=ctx.time_scale(),
                         dropped=ctx.run.manifest().get("ladder_dropped", []),
                         seed_repeat=repeat)


def _redesign_ladder(ctx: RunContext, share: float, planned: Ladder, floor: float) -> Ladder:
    """The ladder for what the search left, priced with the time model as calibrated by the
    search's own trials. A machine slower than profiled lowers the smallest size (halving it
    up to :data:`LADDER_FLOOR_HALVINGS` times) before it gives up and keeps the split's design,
    which the ladder's runner then trims to its share (see ``run_ladder_stage``)."""
    from lmalloc.plan.ladder import LadderBudgetError, design_ladder

    recipe, cost = ctx.recipe, ctx.cost()
    if share <= 0:  # the search overspent all of exploration (a machine far slower than it was)
        ctx.say("[yellow]warning:[/] the search left the ladder nothing of its share; keeping "
                "the split's design, trimmed to the points the fit needs")
        return planned
    for attempt in range(LADDER_FLOOR_HALVINGS + 1):
        try:
            design = design_ladder(share, cost, planned.target_flops, ctx.vocab,
                                   recipe.seq_len, recipe.batch_tokens, min_params=floor,
                                   cooldown_frac=recipe.cooldown_frac)
        except LadderBudgetError as e:
            if attempt == LADDER_FLOOR_HALVINGS:
                ctx.say(f"[yellow]warning:[/] {e}; keeping the split's design, trimmed to "
                        "the ladder's share as it runs")
                return planned
            floor /= 2
            continue
        if attempt:
            ctx.say(f"[yellow]warning:[/] this machine runs slower than profiled (time scale "
                    f"{ctx.time_scale():.2f}); the ladder starts at {floor:.3g} parameters")
        return design
    raise AssertionError("unreachable")


def fit(ctx: RunContext) -> None:
    """laws.json from the run's own trainings (:func:`~lmalloc.scaling.ladderfit.fit_ladder`):
    the L(N, D) fit, remedied by a MAP fit with a stated exponent prior when degenerate, its
    approach-2 cross-check and backtests; the lr law lr*(D) from the search's two horizons
    (or, when they do not allow one, why not)."""
    import numpy as np

    from lmalloc.plan.ladder import Ladder
    from lmalloc.scaling import save_laws
    from lmalloc.scaling.ladderfit import fit_ladder
    from lmalloc.scaling.table import read_runs

    runs = read_runs(ctx.run.path(LADDER_CSV))
    ok = np.isfinite(runs.loss)
    target = Ladder.from_dict(read_json(ctx.run.path(LADDER_JSON), "ladder design")).target_flops
    repeat = ctx.run.manifest().get("stages", {}).get("ladder", {}).get("seed_repeat")
    entries = fit_ladder(runs.N[ok], runs.D[ok], runs.loss[ok], target_flops=target,
                         bootstrap=ctx.options.bootstrap, seed=ctx.options.seed,
                         repeats=[repeat["losses"]] if repeat else (),
                         hp_trials=_search_trials(ctx),
                         C=None if runs.C is None else runs.C[ok])
    law, report = entries["parametric"], entries["degeneracy"]
    warns = fit_warnings(report["plain_params"] or {}) + [
        p["message"] for p in report["problems"] if p["code"] == "too_few"]
    if report["remedy"] == "map":
        prior = report["prior"]
        warns.append(
            "remedy: refitted as a MAP fit with a Gaussian prior on the exponents (mean "
            f"{prior['mean']}, sd {prior['sd']}, {prior['source']}): alpha = "
            f"{law.params['alpha']:.3g}, beta = {law.params['beta']:.3g}"
            + ("; still degenerate" if report.get("degenerate_after") else ""))
    for w in warns:
        ctx.say(f"[yellow]warning:[/] {w}")
    bt = entries["backtest"]
    if bt.get("available"):
        ctx.say(f"backtest: the fit without the largest size predicts it with mean error "
                f"{100 * bt['mean_abs_error']:.2g} %, {bt['inside']} of {bt['of']} inside")
    ex = entries["extrapolation"]
    if ex.get("available"):
        ctx.say(f"backtest in compute: the fit without each size's longest training predicts "
                f"it {ex['factor']:.2g}x further with mean error {100 * ex['mean_error']:+.2g} %"
                f" (rms {100 * ex['rms_log_error']:.2g} %)")
    save_laws(ctx.run.path(LAWS_JSON), {**entries, "warnings": warns})
    ctx.run.record_artifact(LAWS_JSON)
    ctx.run.record_stage("fit", out=LAWS_JSON, points=int(ok.sum()), params=law.params,
                         warnings=warns, remedy=report["remedy"],
                         backtest_error=bt.get("mean_abs_error"),
                         extrapolation_error=ex.get("mean_error"))


def _search_trials(ctx: RunContext) -> dict[str, list[float]] | None:
    """The finished trials of both search studies (the main one and the shorter horizon
    study) as (tokens D, loss in nats, lr) columns, or None. All train the one μP/CompleteP
    proxy, so the scale that varies is the horizon D."""
    import math

    doc = read_json(ctx.run.path(SEARCH_JSON), "search summary")
    trials = list(doc.get("trials", [])) + list((doc.get("horizon") or {}).get("trials", []))
    done = [t for t in trials if t.get("state") == "complete" and t.get("tokens")
            and t.get("value") is not None and t.get("params", {}).get("lr")]
    if not done:
        return None
    nats = math.log(2) / ctx.tokens_per_byte  # the search minimises val_bpb
    return {"D": [float(t["tokens"]) for t in done],
            "loss": [float(t["value"]) * nats for t in done],
            "lr": [float(t["params"]["lr"]) for t in done]}


def precision(ctx: RunContext) -> None:
    from lmalloc.run.explore import read_ladder
    from lmalloc.run.precision import run_precision_stage

    law = run_precision_stage(ctx.run, read_ladder(ctx.run))
    ctx.run.record_artifact(PRECISION_JSON)
    if law is None:
        ctx.say("[yellow]warning:[/] the precision law could not be fitted (see "
                f"{PRECISION_JSON}); the plan ships the model unquantized")
    ctx.run.record_stage(
        "precision", out=PRECISION_JSON, fitted=law is not None,
        **({} if law is None else {"gamma_d": law.gamma_d, "gamma_n": law.gamma_n,
                                   "gamma_b": law.gamma_b}))


def plan(ctx: RunContext) -> None:
    from lmalloc.data.shards import TokenData
    from lmalloc.plan.allocate import Deploy
    from lmalloc.plan.planner import make_plan
    from lmalloc.run.precision import load_precision_law
    from lmalloc.scaling import load_laws
    from lmalloc.scaling.degeneracy import size_rule
    from lmalloc.scaling.hyperparams import HyperparameterLaws

    a, found, split_doc = ctx.allowance, ctx.search, _split_doc(ctx)
    laws = load_laws(ctx.run.path(LAWS_JSON))
    law = laws["parametric"]
    hp = laws.get("hyperparameters")
    noise = laws.get("seed_noise") or {}
    rule = size_rule(laws)
    amount, short = a.for_final(float(split_doc["final_budget"]) - a.reserve())
    if short is not None:
        ctx.say(f"[yellow]warning:[/] the final run gets less than the split promised: "
                f"{short['why']}")
        ctx.run.update_manifest(final_share=short)
    doc = make_plan(
        law, amount=amount, unit=a.unit, hardware=ctx.hardware, vocab_size=ctx.vocab,
        recipe=ctx.recipe, lr=found.lr, warmup=found.warmup, mup_base_width=found.base_width,
        mup_base_depth=found.base_depth, tokens_per_byte=ctx.tokens_per_byte,
        memory_bytes=a.memory,
        source="search at the ladder's smallest width, μP", time_scale=ctx.time_scale(),
        deploy=None if a.deploy is None else Deploy(a.deploy, load_precision_law(ctx.run)),
        unique_tokens=float(TokenData(ctx.run.data).split("train").num_tokens),
        seed_sd=noise.get("sd"), hp_laws=hp if isinstance(hp, HyperparameterLaws) else None,
        size_rule=rule, extrapolation=laws.get("extrapolation"),
    )
    if rule["source"] != "law":
        ctx.say(f"{'[yellow]warning:[/] ' if rule['source'] == 'degenerate law' else ''}"
                f"plan: model size from {rule['source']}: {rule['why']}")
    atomic_write_json(ctx.run.path(PLAN_JSON), doc)
    ctx.run.record_artifact(PLAN_JSON)
    ctx.run.record_stage("plan", out=PLAN_JSON, N=doc["predicted"]["N"],
                         D=doc["predicted"]["D"])


def train(ctx: RunContext) -> None:
    from lmalloc.train.launch import launch_train

    ctx.run.verify_artifact(PLAN_JSON)
    launch_train(ctx.run.root, nproc=ctx.nproc, parallel=ctx.parallel,
                 memory_bytes=ctx.allowance.memory, progress=ctx.progress, say=ctx.say,
                 memory_source="the run's hardware profile or budget mem=")


def evaluate(ctx: RunContext) -> None:
    from lmalloc.evaluate.perplexity import evaluate_run

    res = evaluate_run(ctx.run.root)
    ctx.run.record_stage("eval", out=EVAL_JSON, bpb=res["bpb"])


def compress(ctx: RunContext) -> None:
    from lmalloc.compress.stage import compress_run

    limit = ctx.allowance.deploy
    assert limit is not None  # the stage is skipped without a deployment limit
    res = compress_run(ctx.run.root, budget_bytes=int(limit))
    ctx.run.record_stage("compress", out=COMPRESSED_RESULT, size_bytes=res["size_bytes"],
                         loss=res["loss"], bpb=res["bpb"])


def report(ctx: RunContext) -> None:
    """report.html; a failure here must not lose the run: it is logged in the manifest
    (``report_error``) and warned about, and the next rerun (or ``lmalloc report``) tries
    again."""
    from lmalloc.report.build import build_report

    try:
        path = build_report(ctx.run.root)
    except Exception as e:  # noqa: BLE001 - the trained model matters more than its report
        ctx.run.update_manifest(report_error=f"{type(e).__name__}: {e}")
        ctx.say(f"[yellow]warning:[/] the report could not be built ({type(e).__name__}: "
                f"{e}); the run is complete: retry with `lmalloc report {ctx.run.root}`")
        return
    if ctx.run.manifest().get("report_error"):
        ctx.run.update_manifest(report_error=None)  # an earlier failure, now fixed
    ctx.run.record_stage("report", out=path.name)
    ctx.say(f"report: {path}")


def _no_deploy(ctx: RunContext) -> bool:
    return ctx.allowance.deploy is None


REGISTRY: tuple[Stage, ...] = (
    Stage("prepare", prepare, charges_itself=True),
    Stage("profile", profile, charges_itself=True, title=" (measuring this machine)",
          skip=lambda ctx: ctx.options.hardware is not None,
          done=lambda ctx: ctx.run.path(PROFILE_JSON).exists()),
    Stage("split", split),
    Stage("search", search, charges_itself=True),
    Stage("ladder", ladder, charges_itself=True),
    Stage("fit", fit),
    Stage("precision", precision, skip=_no_deploy),
    Stage("plan", plan),
    Stage("train", train, charges_itself=True),
    Stage("eval", evaluate),
    Stage("compress", compress, skip=_no_deploy),
    Stage("summary", write_summary),
    Stage("report", report),
)
assert tuple(s.name for s in REGISTRY) == STAGES, "lmalloc.layout.STAGES is the order"
assert {s.name for s in REGISTRY if s.skip is _no_deploy} == set(DEPLOY_STAGES)

"""``lmalloc run`` (the whole pipeline under one budget) and ``lmalloc plan`` (a bigger run
planned from a finished exploration)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import adopt_optuna, attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit, say, show_progress
from lmalloc.cli.train import NprocOption, ParallelOption
from lmalloc.plan.recipe import Recipe
from lmalloc.rundir import RunDir

_CPU = Recipe()  # the defaults the help names


@app.command(name="run")
def run_(
    run: Annotated[Path, typer.Option("--run", help="The run directory; rerun the same "
                                      "command to resume.")] = Path("runs/default"),
    data: Annotated[list[Path] | None, typer.Option(help="Corpus files or folders "
                                                    "(repeatable); default: the built-in "
                                                    "corpus.")] = None,
    budget: Annotated[str, typer.Option(help="Total budget: '15m', '2h', '1e15flops', "
                                        "'15m,mem=4GB'.")] = "15m",
    hardware: Annotated[str | None, typer.Option(help="Hardware profile (default: measure "
                                                 "this machine).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search and of every training.")] = 0,
    vocab_size: Annotated[int | None, typer.Option(help="BPE vocabulary size (default "
                                                   "4096, or the recipe's).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe TOML: a \\[recipe] table of "
                                                "seq_len, batch_tokens, min_params, "
                                                "vocab_size, ... (e.g. "
                                                "configs/recipe_gpu_1024.toml); the flags "
                                                "below override it.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Context length of every training "
                                                f"(default {_CPU.seq_len}).")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Tokens per optimizer step of "
                                                     "the exploration (default "
                                                     f"{_CPU.batch_tokens}; whole "
                                                     "micro-batches of sequences).")] = None,
    min_params: Annotated[float | None, typer.Option(help="Smallest ladder model, in "
                                                     "non-embedding parameters (default "
                                                     f"{_CPU.min_params:.3g}).")] = None,
    nproc: NprocOption = 1,
    parallel: ParallelOption = "auto",
    deploy_memory: Annotated[str | None, typer.Option(help="Size the deployed model must fit "
                                                      "(e.g. 2MB): the plan chooses size and "
                                                      "bits jointly and the final model is "
                                                      "compressed to it (same as deploy= in "
                                                      "--budget).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Prepare, explore, fit, plan, train and evaluate under one budget (resumable)."""
    from lmalloc.cost.budget import check_before_work
    from lmalloc.plan.ladder import DEFAULT_MIN_PARAMS
    from lmalloc.run import RunOptions, run_pipeline
    from lmalloc.train.launch import check_parallel_request

    check_parallel_request(nproc, parallel)  # before any budget is spent
    if deploy_memory is not None:
        budget = f"{budget},deploy={deploy_memory}"
    the_recipe, vocab = _run_recipe(recipe, seq_len=seq_len, batch_tokens=batch_tokens,
                                    min_params=min_params, vocab_size=vocab_size)
    check_before_work(budget, hardware,
                      min_deploy_bytes=min(DEFAULT_MIN_PARAMS, the_recipe.min_params) * 2 / 8)
    opts = RunOptions(data=tuple(str(p) for p in data or ()), budget=budget,
                      hardware=hardware, seed=seed, vocab_size=vocab, recipe=the_recipe)
    attach_run_log(run, create=True)
    adopt_optuna()
    rd = RunDir(run)
    try:
        result = run_pipeline(run, opts, say=lambda m: say(m, show=not as_json),
                              progress=show_progress(as_json), nproc=nproc, parallel=parallel)
    except BaseException as e:  # recorded for `lmalloc status`, then raised unchanged
        if isinstance(e, Exception | KeyboardInterrupt):
            with contextlib.suppress(Exception):
                rd.record_failure("run", e)
        raise
    rd.record_failure("run", None)
    emit(result, as_json, _render_summary)


def _run_recipe(path: Path | None, **flags: Any) -> tuple[Recipe, int]:
    """The run's :class:`~lmalloc.plan.recipe.Recipe` and vocabulary: the recipe file's
    settings with the flags given over them, checked before any work."""
    from lmalloc.data.config import PrepareConfig
    from lmalloc.errors import UserError
    from lmalloc.plan.recipe import read_recipe_file
    from lmalloc.run import RunOptions

    settings = read_recipe_file(path) if path is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    settings.update(given)
    vocab = settings.pop("vocab_size", RunOptions.vocab_size)
    where = (f"recipe {path}" if path is not None else "the recipe") + (
        f" with {', '.join('--' + k.replace('_', '-') for k in given)}" if given else "")
    try:
        PrepareConfig(vocab_size=vocab)
        return Recipe(**settings).check(), vocab
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _render_summary(s: dict[str, Any]) -> None:
    from rich.markup import escape

    from lmalloc.layout import STAGES
    from lmalloc.report.words import BPB_UNIT, LOSS_UNIT, vs_interval

    a, p, got = s["allocation"], s["predicted"], s["achieved"]
    m = a["model"]
    console.print(f"[bold]allocation[/]: {a['N']:,} parameters ({m['n_layer']} layers × "
                  f"{m['d_model']}), {a['D']:,} tokens, lr {a['lr']:.3g}, batch "
                  f"{a['batch_tokens']} tokens")
    pl = p["loss"]
    whole = (f"{got['eval_loss']:.4f} {LOSS_UNIT}, " if got.get("eval_loss") is not None
             else "")
    console.print(f"[bold]predicted[/] val loss {pl['value']:.4f} {LOSS_UNIT} [{pl['low']:.4f}, "
                  f"{pl['high']:.4f}]; [bold]achieved[/] {got['val_loss']:.4f} {LOSS_UNIT} "
                  "on the final run's own validation sample "
                  f"({vs_interval(got['val_loss'], pl['low'], pl['high'])}); "
                  f"{whole}{got['eval_bpb']:.4f} {BPB_UNIT} on the whole val split")
    d = s.get("deploy")
    if d:
        dl, got = d["predicted"]["loss"], d["achieved"]
        where = vs_interval(got["loss"], dl["low"], dl["high"])
        lo, hi = (math.nan if v is None else v for v in (dl["low"], dl["high"]))
        console.print(f"[bold]deployed[/] in {got['size_bytes']:,} of {d['limit_bytes']:,.0f} "
                      f"bytes (planned {d['planned_bits'] or 'float'} bits): predicted loss "
                      f"{dl['value']:.4f} {LOSS_UNIT} [{lo:.4f}, {hi:.4f}], achieved "
                      f"{got['loss']:.4f} {LOSS_UNIT} ({where})")
    unit = s["budget"]["unit"]
    total = s["budget"]["total"]
    console.print(f"[bold]budget[/] {s['budget']['text']}: spent "
                  f"{s['spent'][unit]:.4g} of {total:.4g} {unit}")
    if "verdicts" in s:  # the fit's warnings are among them, with what they mean
        for v in s["verdicts"]:
            if v["severity"] != "ok":
                style = "red" if v["severity"] == "problem" else "yellow"
                console.print(f"[{style}]{v['severity']}:[/] {v['topic']}: "
                              f"{escape(v['text'])}")
    for w in [] if "verdicts" in s else s.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")
    order = {name: i for i, name in enumerate(STAGES)}
    for stage, v in sorted(s["by_stage"].items(), key=lambda kv: order.get(kv[0], len(order))):
        console.print(f"  {stage:<8} {v['seconds']:8.1f} s  {v['flops']:.3g} FLOPs")


@app.command()
def plan(
    from_run: Annotated[Path, typer.Option("--from", help="A run directory with a finished "
                                           "exploration (laws.json).")],
    budget: Annotated[str, typer.Option(help="Budget of the run to plan, e.g. "
                                        "'8xH100:24h' or '1e20flops'.")],
    hardware: Annotated[str | None, typer.Option(help="Hardware when the budget names "
                                                 "none.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the plan (default "
                                             "RUN/plans/<budget>.json).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Plan a (bigger) run from a finished exploration's laws and hyperparameters."""
    from lmalloc.plan.planner import plan_from_run

    attach_run_log(from_run)
    emit(plan_from_run(from_run, budget, hardware, out), as_json, _render_plan)


def _render_plan(p: dict[str, Any]) -> None:
    pred, m = p["predicted"], p["model"]
    loss = pred["loss"]
    console.print(f"[bold]plan[/] → {p['path']}")
    console.print(f"  {pred['N']:,} parameters ({m['n_layer']} layers × {m['d_model']}), "
                  f"{pred['D']:.4g} tokens, {pred['flops']:.3g} FLOPs on "
                  f"{p['parallelism']['devices']} × {p['budget']['hardware']}")
    console.print(f"  predicted loss {loss['value']:.4f} [{loss['low']:.4f}, {loss['high']:.4f}]"
                  f", {pred['seconds'] / 3600:.2f} h, {pred['memory_bytes'] / 2**30:.1f} GiB per "
                  f"device ({p['parallelism']['parallel']})")
    for row in p["allocation"]["sensitivity"]:
        console.print(f"  N × {row['N_factor']:<4} → loss {row['loss']['value']:.4f} "
                      f"({row['delta_loss']:+.4f})")

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
from lmalloc.rundir import RunDir


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
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 4096,
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
    check_before_work(budget, hardware, min_deploy_bytes=DEFAULT_MIN_PARAMS * 2 / 8)
    opts = RunOptions(data=tuple(str(p) for p in data or ()), budget=budget,
                      hardware=hardware, seed=seed, vocab_size=vocab_size)
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


def _render_summary(s: dict[str, Any]) -> None:
    from lmalloc.layout import STAGES
    from lmalloc.report.words import BPB_UNIT, LOSS_UNIT, vs_interval

    a, p, got = s["allocation"], s["predicted"], s["achieved"]
    m = a["model"]
    console.print(f"[bold]allocation[/]: {a['N']:,} parameters ({m['n_layer']} layers × "
                  f"{m['d_model']}), {a['D']:,} tokens, lr {a['lr']:.3g}, batch "
                  f"{a['batch_tokens']} tokens")
    pl = p["loss"]
    console.print(f"[bold]predicted[/] val loss {pl['value']:.4f} {LOSS_UNIT} [{pl['low']:.4f}, "
                  f"{pl['high']:.4f}]; [bold]achieved[/] {got['val_loss']:.4f} {LOSS_UNIT} "
                  f"({vs_interval(got['val_loss'], pl['low'], pl['high'])}); "
                  f"{got['eval_bpb']:.4f} {BPB_UNIT} on the whole val split")
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
    for w in s.get("warnings", []):
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

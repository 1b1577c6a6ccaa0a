"""``lmalloc report RUN`` (the HTML report and its figures) and ``lmalloc status RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit
from lmalloc.errors import UserError

RunArg = Annotated[Path | None, typer.Argument(help="The run directory (what `lmalloc run "
                                               "--run` wrote); finished or not.")]
RunOpt = Annotated[Path | None, typer.Option("--run", help="The same, as an option (like "
                                             "every other command).")]


def _one_run(run: Path | None, run_opt: Path | None) -> Path:
    """The run folder, given as the argument or as ``--run`` (one of them, once)."""
    if run is not None and run_opt is not None and run != run_opt:
        raise UserError(f"two run folders given ({run} and --run {run_opt}): give one")
    chosen = run if run is not None else run_opt
    if chosen is None:
        raise UserError("give the run folder: --run runs/NAME (or as the argument)")
    return chosen


@app.command()
def report(run: RunArg = None, run_opt: RunOpt = None, as_json: JsonFlag = False) -> None:
    """Write RUN/report.html (figures embedded; opens from disk) and RUN/plots/."""
    from lmalloc.report.build import build_report_detailed

    run = _one_run(run, run_opt)
    attach_run_log(run)
    path, plots = build_report_detailed(run)
    result = {"report": str(path),
              "figures": {k: None if v is None else {"png": str(v.png), "svg": str(v.svg)}
                          for k, v in plots.items()}}
    emit(result, as_json, _render_report)


def _render_report(r: dict[str, Any]) -> None:
    console.print(f"[bold]report[/] → {r['report']}")
    for name, f in r["figures"].items():
        console.print(f"  {name:<22} {f['png'] if f else '[dim]not run yet[/]'}")


@app.command()
def status(run: RunArg = None, run_opt: RunOpt = None, as_json: JsonFlag = False) -> None:
    """Stages (done / running / not run), budget spent and left, best trial, the plan."""
    from lmalloc.report.artifacts import run_status

    emit(run_status(_one_run(run, run_opt)), as_json, _render_status)


def _render_status(s: dict[str, Any]) -> None:
    from rich.table import Table

    from lmalloc.report.words import BPB_UNIT, LOSS_UNIT

    table = Table(title=f"run {s['run']}")
    for col in ("stage", "state", "seconds", "FLOPs"):
        table.add_column(col, justify="right" if col in ("seconds", "FLOPs") else "left")
    style = {"done": "green", "running": "yellow", "not run": "dim", "failed": "red",
             "interrupted": "red"}
    for row in s["stages"]:
        table.add_row(row["stage"], f"[{style[row['state']]}]{row['state']}[/]",
                      f"{row['seconds']:.1f}", f"{row['flops']:.3g}")
    console.print(table)
    b = s["budget"]
    if b:
        console.print(f"[bold]budget[/] {b['text']}: spent {b['spent']:.4g} of {b['total']:.4g} "
                      f"{b['unit']} ({b['spent'] / b['total']:.0%}), left {b['left']:.4g}")
    r = s.get("recipe")
    if r:
        console.print(f"[bold]recipe[/] context {r['seq_len']:,} tokens, batch "
                      f"{r['batch_tokens']:,} tokens, vocabulary {r['vocab_size']:,}, smallest "
                      f"ladder model {r['min_params']:.3g} parameters")
    if s["best_trial"]:
        t = s["best_trial"]
        console.print(f"[bold]best trial[/] #{t['number']}: {t['value']:.4g} {BPB_UNIT} with "
                      f"{t['params']}")
    if s["plan"]:
        p = s["plan"]
        console.print(f"[bold]plan[/] {p['N']:,} parameters, {p['D']:,} tokens; predicted loss "
                      f"{p['loss']['value']:.4f} {LOSS_UNIT} [{p['loss']['low']:.4f}, "
                      f"{p['loss']['high']:.4f}]")
    if s.get("failure"):
        f = s["failure"]
        console.print(f"[bold red]failed[/] the last `lmalloc {f['command']}` ({f['at']}): "
                      f"{f['error']}")
    console.print(f"[bold]summary[/] {s['summary']}")

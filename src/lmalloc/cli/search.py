"""``lmalloc search``: tune hyperparameters with proxy trainings on an Optuna study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import adopt_optuna, attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit, err_console, say, show_progress


@app.command()
def search(
    run: Annotated[Path, typer.Option("--run", help="The run directory (runs/NAME).")],
    space: Annotated[Path | None, typer.Option(help="Search space TOML "
                                               "(default: the packaged space_tiny.toml).")] = None,
    strategy: Annotated[str, typer.Option(help="grid, random, tpe, gp, cmaes, nsga2, "
                                          "qmc, pg, dqn, bandit or auto.")] = "auto",
    budget: Annotated[str | None, typer.Option(help="Stop when spent: '10m', '1e15flops', "
                                               "'10m,mem=4GB'.")] = None,
    trials: Annotated[int | None, typer.Option(help="Stop after this many finished "
                                               "trials.")] = None,
    workers: Annotated[int, typer.Option(help="Trials at once: local worker processes, or "
                                         "Ray tasks in flight.")] = 1,
    backend: Annotated[str, typer.Option(help="local (processes on this machine) or ray "
                                         "(tasks on a Ray cluster).")] = "local",
    address: Annotated[str, typer.Option(help="Ray cluster for --backend ray: auto or "
                                         "HOST:PORT of its head.")] = "auto",
    trial_cpus: Annotated[float, typer.Option(help="CPUs one Ray trial declares (and its "
                                              "torch threads).")] = 1.0,
    trial_gpus: Annotated[float, typer.Option(help="GPUs one Ray trial declares.")] = 0.0,
    max_retry: Annotated[int, typer.Option(help="Times a trial whose worker died is run "
                                           "again.")] = 2,
    recipe: Annotated[Path | None, typer.Option(help="Base recipe every trial starts from "
                                                "(default: the packaged tiny.toml).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default "
                                                "sqlite in the run).")] = None,
    pruner: Annotated[str, typer.Option(help="asha, asha-ties (ASHA that lets a trial within "
                                        "0.5 % of a rung's cut-off go on), hyperband, median "
                                        "or none.")] = "asha",
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    second_objective: Annotated[str | None, typer.Option(help="flops, memory or params: a "
                                                         "Pareto search (pruned at rungs by "
                                                         "dominance unless --pruner "
                                                         "none).")] = None,
    worker: Annotated[bool, typer.Option("--worker", help="Join a shared study (no "
                                         "orphan recovery).")] = False,
    status: Annotated[bool, typer.Option("--status", help="Only show the study.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search hyperparameters with proxy trainings; resumable, budget-aware."""
    from lmalloc.search import study as st

    attach_run_log(run)
    adopt_optuna()
    if status:
        s = st.build_settings(run, space, recipe, None, strategy, 1, storage)
        emit(st.summarize(st.load_study(s, check_space=False)), as_json, _render)
        return
    s = st.build_settings(run, space, recipe, budget, strategy, trials, storage, pruner, seed,
                          second_objective=second_objective)
    s.backend, s.address, s.max_retry = backend, address, max_retry
    s.trial_cpus, s.trial_gpus = trial_cpus, trial_gpus
    note = None if worker else _resume_note(s)
    if note:
        say(note, show=not as_json)
    live = _LiveTable() if show_progress(as_json) else None
    result = st.run_search(s, workers=workers, on_poll=live, join_existing=worker)
    if live is not None:
        live.stop()
    emit(result, as_json, _render)


def _resume_note(s: Any) -> str | None:
    """"resuming the study: ..." when the run's study already has trials (a rerun after a
    kill or Ctrl-C), else None. Reads only: a missing study is not created here."""
    from collections import Counter

    import optuna

    from lmalloc.search import study as st

    url = st.storage_url(s.run_dir, s.storage)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    try:
        study = optuna.load_study(study_name=s.study_name, storage=st.open_storage(url))
    except KeyError:
        return None
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    if not states:
        return None
    left = states.get("RUNNING", 0)
    return (f"resuming the study: {sum(states.values()) - left} trials finished"
            + (f", {left} left running by an interrupted search (failed and retried)"
               if left else ""))


class _LiveTable:
    """Redraws the trial table while the search runs (on stderr, like every progress display)."""

    def __init__(self) -> None:
        from rich.live import Live

        self.live = Live(console=err_console, refresh_per_second=1, transient=True)
        self.live.start()

    def __call__(self, study: Any) -> None:
        from lmalloc.search.study import summarize

        self.live.update(_table(summarize(study), last=15))

    def stop(self) -> None:
        self.live.stop()


def _table(summary: dict[str, Any], last: int | None = None) -> Any:
    from rich.table import Table

    t = Table(title=f"study {summary['study']}: {summary['counts']}")
    for col in ("trial", "state", "value", "best so far", "params / reason"):
        t.add_column(col)
    best = float("inf")
    rows = summary["trials"]
    for r in rows[-last:] if last else rows:
        if r["value"] is not None and r["state"] == "complete":
            best = min(best, r["value"])
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        detail = r["reason"] if r["state"] != "complete" else _short(r["params"])
        t.add_row(str(r["number"]), r["status"] or r["state"], value,
                  f"{best:.4f}" if best < float("inf") else "-", str(detail or ""))
    return t


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _render(summary: dict[str, Any]) -> None:
    console.print(_table(summary))
    for b in summary["best"]:
        console.print(f"[bold]best[/] trial {b['number']}: {b['values']} {_short(b['params'])}")

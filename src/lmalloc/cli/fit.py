"""``lmalloc fit``: fit scaling laws to a table of runs and allocate a target compute."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.output import JsonFlag, console, emit, err_console


@app.command()
def fit(
    runs: Annotated[
        Path,
        typer.Argument(
            help="CSV with columns N (params), D (tokens), loss "
            "[, C (flops)]; names are matched case-insensitively."
        ),
    ],
    target_flops: Annotated[
        float | None, typer.Option(help="Compute to allocate, e.g. 1e23.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="parametric (Chinchilla approach 3), isoflop (approach 2) or both.")
    ] = "parametric",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for intervals.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    level: Annotated[float, typer.Option(help="Interval coverage.")] = 0.9,
    flops_per_token_per_param: Annotated[float, typer.Option(help="k in C = k N D.")] = 6.0,
    param_convention: Annotated[
        str, typer.Option(help="What N counts: total or non_embedding.")
    ] = "total",
    out: Annotated[
        Path | None, typer.Option(help="Also write the fit here (laws.json, atomic).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit L(N, D) (and/or IsoFLOP power laws) with bootstrap intervals; print N*, D*, loss."""
    from lmalloc.scaling.lawsfile import save_laws
    from lmalloc.scaling.summary import fit_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = fit_runs(
            runs,
            method=method,
            target_flops=target_flops,
            bootstrap=bootstrap,
            level=level,
            seed=seed,
            param_convention=param_convention,
            flops_per_token_per_param=flops_per_token_per_param,
        )
    for message in dict.fromkeys(str(w.message) for w in caught):  # once each, in order
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    result = summary.to_dict()
    if out is not None:
        save_laws(out, result)
    emit(result, as_json, _render)


def _render(r: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]{r['n_runs']} runs[/] from {r['source']}")
    for key, title in (
        ("parametric", "L(N, D) = E + A/N^alpha + B/D^beta"),
        ("isoflop", "IsoFLOP: N* = k_N C^a, D* = k_D C^b"),
    ):
        if key in r:
            _table(Table, title, r[key]["intervals"])
    for key, title in (
        ("optimal", "compute-optimal (parametric)"),
        ("isoflop_optimal", "compute-optimal (IsoFLOP)"),
    ):
        if key in r:
            rows = {k: v for k, v in r[key].items() if isinstance(v, dict)}
            _table(Table, f"{title} at C = {r['target_flops']:.3g} FLOPs", rows)


def _table(table_cls: Any, title: str, rows: dict[str, dict[str, float]]) -> None:
    level = next(iter(rows.values()))["level"]
    t = table_cls(title=title)
    for col in ("", "value", f"{level:.0%} low", f"{level:.0%} high"):
        t.add_column(col, justify="right")
    for name, e in rows.items():
        cells = ("-" if e[k] is None else f"{e[k]:.4g}" for k in ("value", "low", "high"))
        t.add_row(name, *cells)
    console.print(t)

"""``lmalloc compress``: fit the final model into a deployment memory budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.output import JsonFlag, console, emit
from lmalloc.errors import invalid


def _ints(option: str, text: str, allowed: str) -> tuple[int, ...]:
    try:
        values = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise invalid(option, text, allowed) from None
    if not values:
        raise invalid(option, text, allowed)
    return values


@app.command()
def compress(
    run: Annotated[Path, typer.Option("--run", help="The run directory (with final/ and "
                                      "data/).")],
    deploy_memory: Annotated[str, typer.Option("--deploy-memory", help="Most bytes the "
                                               "compressed model may take, e.g. 50MB.")],
    method: Annotated[str, typer.Option("--method", help="rtn (round to nearest) or gptq "
                                        "(error-compensating, calibrated).")] = "gptq",
    bits: Annotated[str, typer.Option("--bits", help="Candidate bit widths, from 8,4,3,2.")]
    = "8,4,3,2",
    group_size: Annotated[str, typer.Option("--group-size", help="Candidate group sizes "
                                            "(input columns per scale), e.g. 32,64,128.")]
    = "64",
    symmetric: Annotated[bool, typer.Option("--symmetric", help="Symmetric formats (no "
                                            "zero points).")] = False,
    sensitivity: Annotated[str, typer.Option("--sensitivity", help="kl (divergence from "
                                             "the original's predictions) or loss.")] = "kl",
    calib_tokens: Annotated[int, typer.Option("--calib-tokens", help="Train tokens for "
                                              "calibration (and as many for sensitivity).")]
    = 8192,
    prune: Annotated[str | None, typer.Option("--prune", help="2:4, unstructured:F, wanda:F, "
                                              "heads:K or neurons:F (before quantizing).")]
    = None,
    recover_steps: Annotated[int, typer.Option("--recover-steps", help="Fine-tuning steps "
                                               "after pruning.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Prune (optional), choose each layer's format (MILP under the budget), quantize,
    evaluate; writes RUN/compressed/{model.safetensors,result.json}."""
    from lmalloc.compress.stage import CompressSettings, compress_run
    from lmalloc.cost.budget import parse_size

    settings = CompressSettings(
        bits=_ints("--bits", bits, "comma-separated integers from 8,4,3,2"),
        group_sizes=_ints("--group-size", group_size, "comma-separated positive integers"),
        symmetric=symmetric, method=method, sensitivity=sensitivity,
        calib_tokens=calib_tokens, prune=prune, recover_steps=recover_steps)
    emit(compress_run(run, int(parse_size(deploy_memory)), settings), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    extra = f", prune {r['prune']}" if r.get("prune") else ""
    console.print(f"[bold]compressed[/] ({r['method']}{extra}) {r['baseline_size_bytes']:,} → "
                  f"{r['size_bytes']:,} bytes (budget {r['budget_bytes']:,}); bpb "
                  f"{r['baseline_bpb']:.4f} → {r['bpb']:.4f}; proxy Spearman "
                  f"{r['proxy_spearman']:.2f}")
    for layer, fmt in r["formats"].items():
        console.print(f"  {layer:<36} {fmt}")

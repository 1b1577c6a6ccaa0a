"""``lmalloc compress``: fit the final model into a deployment memory budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.output import JsonFlag, console, emit
from lmalloc.errors import invalid


@app.command()
def compress(
    run: Annotated[Path, typer.Option("--run", help="The run directory (with final/ and "
                                      "data/).")],
    deploy_memory: Annotated[str, typer.Option("--deploy-memory", help="Most bytes the "
                                               "compressed model may take, e.g. 50MB.")],
    bits: Annotated[str, typer.Option("--bits", help="Candidate bit widths, from 8,4,3,2.")]
    = "8,4,3,2",
    group_size: Annotated[int, typer.Option("--group-size", help="Input columns per "
                                            "quantization group.")] = 64,
    symmetric: Annotated[bool, typer.Option("--symmetric", help="Symmetric formats (no "
                                            "zero points).")] = False,
    calib_tokens: Annotated[int, typer.Option("--calib-tokens", help="Validation tokens per "
                                              "sensitivity measurement.")] = 8192,
    as_json: JsonFlag = False,
) -> None:
    """Choose each layer's format (MILP under the budget), quantize, evaluate; writes
    RUN/compressed/{model.safetensors,result.json}."""
    from lmalloc.compress.stage import compress_run
    from lmalloc.cost.budget import parse_size

    try:
        widths = tuple(int(b) for b in bits.split(",") if b.strip())
    except ValueError:
        raise invalid("--bits", bits, "comma-separated integers from 8,4,3,2") from None
    result = compress_run(run, int(parse_size(deploy_memory)), widths, group_size, symmetric,
                          calib_tokens)
    emit(result, as_json, _render)


def _render(r: dict[str, Any]) -> None:
    console.print(f"[bold]compressed[/] {r['baseline_size_bytes']:,} → {r['size_bytes']:,} "
                  f"bytes (budget {r['budget_bytes']:,}); bpb {r['baseline_bpb']:.4f} → "
                  f"{r['bpb']:.4f}; proxy Spearman {r['proxy_spearman']:.2f}")
    for layer, fmt in r["formats"].items():
        console.print(f"  {layer:<36} {fmt}")

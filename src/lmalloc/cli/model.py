"""``lmalloc generate`` and ``lmalloc export``: use a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit

RunOpt = Annotated[Path, typer.Option("--run", help="Run directory (runs/NAME) or its final/.")]


@app.command()
def generate(
    run: RunOpt,
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    max_tokens: Annotated[int, typer.Option(help="Most new tokens to generate.")] = 100,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample from the k most likely.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Continue a prompt with a run's trained model (KV-cached decoding)."""
    from lmalloc.evaluate.generate import generate_text

    attach_run_log(run)
    result = generate_text(run, prompt, max_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, seed=seed)

    def render(r: dict[str, Any]) -> None:
        from rich.text import Text

        text = Text(r["prompt"], style="bold")
        text.append(r["text"])  # Text, not markup: generated brackets print as they are
        console.print(text)

    emit(result, as_json, render)


@app.command()
def export(
    run: RunOpt,
    format: Annotated[str, typer.Option("--format", help="Export format: hf.")] = "hf",
    out: Annotated[Path | None, typer.Option(help="Output folder (default final/hf).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export a run's trained model (hf: a folder transformers loads as LlamaForCausalLM)."""
    from lmalloc.model.export import export_run

    attach_run_log(run)
    result = export_run(run, format, out)
    emit(result, as_json, lambda r: console.print(
        f"exported {r['architecture']} to {r['out']} ({', '.join(r['files'])})", highlight=False))

"""``lmalloc train`` and ``lmalloc eval``: train the run's model, measure its perplexity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit, show_progress

RunOpt = Annotated[Path, typer.Option("--run", help="The run directory (runs/NAME).")]


@app.command()
def train(
    run: RunOpt,
    recipe: Annotated[Path | None, typer.Option(help="Recipe TOML with model and train "
                                                "tables; default: the run's plan.json.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Train this many tokens (replaces "
                                                   "the recipe's length).")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds "
                                                      "of training.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from runs/NAME/final/checkpoint "
                                         "if present.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Train the run's model on its prepared data into runs/NAME/final/."""
    from lmalloc.train.launch import train_run

    attach_run_log(run)
    result = train_run(run, recipe, max_tokens=max_tokens, max_seconds=max_seconds, lr=lr,
                       resume=resume, progress=show_progress(as_json))
    emit(result, as_json, _render_train)


def _render_train(r: dict[str, Any]) -> None:
    val = f"val loss {r['val_loss']:.4f}, {r['val_bpb']:.4f} bits/byte" if r["val_loss"] else ""
    console.print(f"[bold]{r['status']}[/] after {r['steps']} steps, {r['tokens']:,} tokens, "
                  f"{r['seconds']:.1f} s ({r['reason']}). {val}")
    console.print(f"checkpoint: {r['out_dir']}/checkpoint")


@app.command(name="eval")
def eval_(
    run: RunOpt,
    text: Annotated[Path | None, typer.Option(help="Evaluate on this UTF-8 text file "
                                              "instead of the val split.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluate at most this many "
                                                   "tokens.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Perplexity and bits per byte of the run's trained model; merged into eval.json."""
    from lmalloc.evaluate.perplexity import evaluate_run

    attach_run_log(run)
    result = evaluate_run(run, text=text, max_tokens=max_tokens)
    emit(result, as_json, _render_eval)


def _render_eval(r: dict[str, Any]) -> None:
    console.print(f"loss {r['loss']:.4f} nats/token, perplexity {r['perplexity']:.2f}, "
                  f"{r['bpb']:.4f} bits/byte over {r['tokens']:,} tokens ({r['source']})")

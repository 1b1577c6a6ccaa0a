"""``lmalloc train`` and ``lmalloc eval``: train the run's model, measure its perplexity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit, say, show_progress

RunOpt = Annotated[Path, typer.Option("--run", help="The run directory (runs/NAME).")]


# how the training of ``train`` and ``run``'s final stage is laid out (shared by both)
NprocOption = Annotated[int, typer.Option(help="Training processes on this machine (one per "
                                          "GPU, or CPU cores); > 1 runs under torchrun.")]
ParallelOption = Annotated[str, typer.Option(help="With --nproc > 1: auto (DDP unless the "
                                             "memory model says it won't fit, then FSDP), "
                                             "ddp or fsdp.")]


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
    nproc: NprocOption = 1,
    parallel: ParallelOption = "auto",
    memory: Annotated[str | None, typer.Option(help="One device's memory for the DDP/FSDP "
                                               "choice, e.g. 80GB (default: measured).")
                      ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train the run's model on its prepared data into runs/NAME/final/."""
    from lmalloc.cost.budget import parse_size
    from lmalloc.train.launch import launch_train

    memory_bytes = parse_size(memory) if memory is not None else None
    attach_run_log(run)
    result = launch_train(run, recipe, nproc=nproc, parallel=parallel,
                          memory_bytes=memory_bytes, max_tokens=max_tokens,
                          max_seconds=max_seconds, lr=lr, resume=resume,
                          progress=show_progress(as_json),
                          say=lambda m: say(m, show=not as_json))
    emit(result, as_json, _render_train)


def _render_train(r: dict[str, Any]) -> None:
    val = f"val loss {r['val_loss']:.4f}, {r['val_bpb']:.4f} bits/byte" if r["val_loss"] else ""
    console.print(f"[bold]{r['status']}[/] after {r['steps']} steps, {r['tokens']:,} tokens, "
                  f"{r['seconds']:.1f} s ({r['reason']}). {val}")
    console.print(f"checkpoint: {r['out_dir']}/checkpoint")
    layout = r.get("parallel") or {}
    if layout.get("nproc", 1) > 1:
        console.print(f"{layout['nproc']} processes, {layout['parallel'].upper()}")


@app.command(name="eval")
def eval_(
    run: RunOpt,
    text: Annotated[Path | None, typer.Option(help="Evaluate on this UTF-8 text file "
                                              "instead of the val split.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluate at most this many "
                                                   "tokens.")] = None,
    task: Annotated[list[str] | None, typer.Option(help="A built-in task (sst2, trec, "
                                                   "multi30k) or a task file (.toml/.jsonl); "
                                                   "repeatable.")] = None,
    shots: Annotated[int, typer.Option(help="Few-shot demonstrations per prompt "
                                       "(0: zero-shot).")] = 0,
    finetune: Annotated[bool, typer.Option("--finetune", help="Fine-tune on the task's train "
                                           "split, then evaluate.")] = False,
    corpus: Annotated[list[str] | None, typer.Option(help="wikitext2, ptb or a text file: "
                                                     "test-set perplexity; repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the few-shot draw / fine-tuning.")] = 0,
    max_examples: Annotated[int | None, typer.Option(help="Use at most this many examples "
                                                     "per split.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder of the data sets (default "
                                                   "$LMALLOC_SHARED_DATA or ../shared/data)."
                                                   )] = None,
    as_json: JsonFlag = False,
) -> None:
    """Perplexity, bits per byte and downstream tasks of the run's model; into eval.json."""
    attach_run_log(run)
    if not task and not corpus:
        from lmalloc.evaluate.perplexity import evaluate_run

        emit(evaluate_run(run, text=text, max_tokens=max_tokens), as_json, _render_eval)
        return
    from lmalloc.evaluate.suite import evaluate_suite

    corpora = [*(corpus or ()), *([str(text)] if text else [])]  # --text joins the corpora
    result = evaluate_suite(run, task or (), corpora, shots=shots, finetune=finetune,
                            seed=seed, max_examples=max_examples, max_tokens=max_tokens,
                            data_root=data_root)
    emit(result, as_json, _render_suite)


def _render_eval(r: dict[str, Any]) -> None:
    console.print(f"loss {r['loss']:.4f} nats/token, perplexity {r['perplexity']:.2f}, "
                  f"{r['bpb']:.4f} bits/byte over {r['tokens']:,} tokens ({r['source']})")


def _render_suite(r: dict[str, Any]) -> None:
    for name, modes in r["tasks"].items():
        for mode, m in modes.items():
            # zero/few-shot results are flat; fine-tuning reports {"metrics": {split: ...}}
            per_split = m.get("metrics") or {m.get("split", "?"): m}
            for split, s in per_split.items():
                console.print(f"[bold]{name}[/] {mode} on {split} ({s.get('n', '?')} "
                              f"examples): {_metric_line(s)}", highlight=False)
    for p in r["perplexity"].values():
        _render_eval(p)


def _metric_line(m: dict[str, Any]) -> str:
    from rich.markup import escape

    if "accuracy" in m:
        base = m.get("majority", {}).get("accuracy")
        extra = f" (majority {base:.4f})" if base is not None else ""
        return f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}{extra}"
    if "acc_norm" in m:
        return f"acc {m['acc']:.4f}, acc_norm {m['acc_norm']:.4f}"
    if "bleu" in m:
        return (f"BLEU {m['bleu']:.2f} ({escape(m['signature'])}), ROUGE-1/2/L "
                f"{m['rouge1']:.4f}/{m['rouge2']:.4f}/{m['rougeL']:.4f}")
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))

"""``lmalloc prepare``: corpus files (or the built-in corpus) to token shards in runs/NAME/data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit, show_progress
from lmalloc.data.config import FIELD_HELP as H


@app.command()
def prepare(
    run: Annotated[Path, typer.Option("--run", help="The run directory (runs/NAME).")],
    sources: Annotated[list[Path] | None, typer.Argument(help="Files or folders (.txt .md .py "
                       ".jsonl .parquet, optionally .gz/.zst); none: the built-in corpus "
                       "(this Python's standard library).")] = None,
    vocab_size: Annotated[int, typer.Option(help=H["vocab_size"])] = 4096,
    tokenizer: Annotated[str | None, typer.Option(help=H["tokenizer"])] = None,
    text_field: Annotated[str, typer.Option(help=H["text_field"])] = "text",
    parquet_column: Annotated[str, typer.Option(help=H["parquet_column"])] = "text",
    include: Annotated[list[str] | None, typer.Option(help=H["include"], metavar="<glob>")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help=H["exclude"], metavar="<glob>")] = None,
    min_chars: Annotated[int, typer.Option(help=H["min_chars"])] = 32,
    dedup_near: Annotated[bool, typer.Option(help=H["dedup_near"])] = True,
    jaccard_threshold: Annotated[float, typer.Option(help=H["jaccard_threshold"])] = 0.8,
    num_perm: Annotated[int, typer.Option(help=H["num_perm"])] = 64,
    val_fraction: Annotated[float, typer.Option(help=H["val_fraction"])] = 0.02,
    shard_tokens: Annotated[int, typer.Option(help=H["shard_tokens"])] = 50_000_000,
    max_bytes: Annotated[int, typer.Option(help=H["max_bytes"])] = 0,
    seed: Annotated[int, typer.Option(help=H["seed"])] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Read, clean, deduplicate, tokenize and pack a corpus into runs/NAME/data/."""
    from lmalloc.data.config import PrepareConfig
    from lmalloc.data.pipeline import prepare_run

    attach_run_log(run, create=True)
    cfg = PrepareConfig(
        vocab_size=vocab_size, tokenizer=tokenizer, text_field=text_field,
        parquet_column=parquet_column, include=tuple(include or ()),
        exclude=tuple(exclude or ()), min_chars=min_chars, dedup_near=dedup_near,
        jaccard_threshold=jaccard_threshold, num_perm=num_perm, val_fraction=val_fraction,
        shard_tokens=shard_tokens, max_bytes=max_bytes, seed=seed,
    )
    emit(prepare_run(run, sources, cfg, progress=show_progress(as_json)), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    c, s = r["counts"], r["splits"]
    removed = ", ".join(f"{k} {v}" for k, v in r["removed"].items() if v) or "none"
    console.print(f"[bold]{'reused' if r['reused'] else 'prepared'}[/] {c['documents_kept']:,}"
                  f" of {c['documents']:,} documents ({c['bytes'] / 1e6:.1f} MB read) in "
                  f"{r['seconds']:.1f} s; removed: {removed}")
    console.print(f"train {s['train']['tokens']:,} tokens, val {s['val']['tokens']:,} tokens; "
                  f"vocabulary {r['vocab_size']:,}")

"""``lmalloc eval``'s perplexity: a finished run's final model on its val split or a text
file, recorded in ``eval.json``.

The measurement itself (loss, perplexity, bits per byte; how windows and bytes are counted)
is :func:`lmalloc.train.validation.evaluate_lm`, the one code the trainer validates with too;
it is re-exported here as the evaluation package's public name for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmalloc.train.device import device_type
from lmalloc.train.validation import evaluate_lm, text_windows, tokenize_text

__all__ = ["evaluate_lm", "evaluate_run", "record_eval", "text_windows", "tokenize_text"]


def evaluate_run(run_dir: str | Path, text: str | Path | None = None,
                 max_tokens: int | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Evaluate ``runs/<name>/final`` on the val split (or a text file) and merge the result
    into ``runs/<name>/eval.json`` under ``perplexity.<source>``."""
    from lmalloc.data.shards import TokenData
    from lmalloc.model.io import load_model
    from lmalloc.rundir import RunDir, read_json

    run = RunDir(run_dir)
    device = device_type()
    model, _ = load_model(run.root, device)  # reads runs/<name>/final/
    seq_len = int(read_json(run.final / "config.json", "run config")["train"]["seq_len"])
    data = TokenData(run.data)
    if text is None:
        res = evaluate_lm(model, data.split("val"), seq_len=seq_len, batch_size=batch_size,
                          max_tokens=max_tokens)
        name = "val"
    else:
        res = evaluate_lm(model, text, seq_len=seq_len, batch_size=batch_size,
                          max_tokens=max_tokens, tokenizer_path=data.tokenizer_path)
        name = f"text:{Path(text).name}"
    res = {**res, "source": name, "seq_len": seq_len}
    record_eval(run.root, ("perplexity", name), res)
    return res


def record_eval(run_root: str | Path, keys: Sequence[str], value: Any) -> None:
    """Set ``eval.json[keys[0]][keys[1]]... = value`` atomically, keeping everything else:
    the one writer of a run's ``eval.json`` (perplexities, downstream tasks)."""
    from lmalloc.rundir import atomic_write_json, read_json

    path = Path(run_root) / "eval.json"
    doc = read_json(path, "evaluation results") if path.exists() else {}
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    atomic_write_json(path, doc)

"""``lmalloc eval --task/--corpus``: evaluate a run's model on tasks and corpora, record results.

Results merge into ``runs/<name>/eval.json`` (written atomically, other entries kept):
``tasks.<task>.<mode>`` with mode ``zeroshot``, ``fewshot_<k>`` or ``finetune``, and
``perplexity.<corpus>`` beside the ``perplexity.val`` entry of ``lmalloc eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.train.device import device_type


def evaluate_suite(run_dir: str | Path, tasks: Sequence[str] = (), corpora: Sequence[str] = (),
                   *, shots: int = 0, finetune: bool = False, seed: int = 0,
                   max_examples: int | None = None, max_tokens: int | None = None,
                   data_root: Path | None = None, batch_size: int = 16) -> dict[str, Any]:
    """Evaluate the run's final model on each task (zero/k-shot, or fine-tuned) and corpus.

    Every task and corpus is loaded first, so a bad name fails before any model work.

    Returns:
        ``{"tasks": {name: {mode: result}}, "perplexity": {source: result}}``.
    """
    from tokenizers import Tokenizer

    from lmalloc.evaluate.corpora import corpus_path
    from lmalloc.evaluate.finetune import finetune_task
    from lmalloc.evaluate.perplexity import evaluate_lm, record_eval
    from lmalloc.evaluate.scoring import evaluate_task
    from lmalloc.evaluate.tasks import load_task
    from lmalloc.model.io import find_eot_id, find_tokenizer, load_model
    from lmalloc.rundir import RunDir

    if finetune and shots:
        raise UserError("--shots and --finetune exclude each other: a fine-tuned model is "
                        "scored on the bare prompt")
    run = RunDir(run_dir)
    loaded = [load_task(t, data_root, max_examples=max_examples) for t in tasks]
    texts = [corpus_path(c, data_root) for c in corpora]
    device = device_type()
    model, cfg = load_model(run.root, device)
    tok_path = find_tokenizer(run.root)
    tokenizer, eot_id = Tokenizer.from_file(str(tok_path)), find_eot_id(tok_path)
    out: dict[str, Any] = {"tasks": {}, "perplexity": {}}
    for task in loaded:
        if finetune:
            res, mode = finetune_task(run.root, task, seed=seed), "finetune"
        else:
            res = evaluate_task(model, tokenizer, task, shots=shots, seed=seed, eot_id=eot_id,
                                batch_size=batch_size)
            mode = res["mode"]
        record_eval(run.root, ("tasks", task.name, mode), res)
        out["tasks"].setdefault(task.name, {})[mode] = res
    for name, path in texts:
        res = evaluate_lm(model, path, seq_len=cfg.seq_len, batch_size=8, max_tokens=max_tokens,
                          tokenizer_path=tok_path)
        res = {**res, "source": name, "file": str(path), "seq_len": cfg.seq_len}
        record_eval(run.root, ("perplexity", name), res)
        out["perplexity"][name] = res
    return out

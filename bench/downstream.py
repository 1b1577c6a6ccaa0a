"""Downstream quality of a tiny model: SST-2 fine-tuning against the majority-class baseline.

The recipe (the CI test ``tests/integration/test_downstream.py`` runs it for one seed, this
benchmark for several):

1. prepare a run's data from SST-2 train sentences (``CORPUS_BYTES`` of them, BPE vocabulary
   ``VOCAB``) with ``lmalloc.data.prepare``;
2. pretrain a 2-layer, 64-wide GPT on it for ``PRETRAIN_STEPS`` steps with the Trainer into
   ``run/final`` (the layout ``load_model`` reads);
3. fine-tune it with a classification head (``lmalloc.evaluate.finetune.finetune_task``) on
   ``N_TRAIN`` SST-2 train rows of at least ``MIN_WORDS`` words (a fixed random subset; the
   train file also holds short phrases, the dev file whole sentences) for ``FINETUNE_STEPS``
   steps;
4. score the 872 dev sentences: accuracy and macro-F1 against the majority class of the train
   subset (the peer: the floor any classifier must beat).

A seed changes the pretraining initialisation and data order, the head's initialisation and
the fine-tuning data order; data and tokenizer are shared. Reported per seed, then median,
spread (max - min) and the margin over the baseline.

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/downstream.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "downstream.json"
VOCAB = 512
CORPUS_BYTES = 1_000_000
MODEL = {"n_layer": 2, "n_head": 2, "d_model": 64, "seq_len": 64}
PRETRAIN_STEPS = 150
N_TRAIN = 4000
MIN_WORDS = 5  # train rows of at least this many words (dev holds whole sentences)
FINETUNE_STEPS = 300
BATCH = 32
LR = 1e-3


def prepare_data(data_root: Path, data_dir: Path) -> None:
    """Prepare ``data_dir`` from the first ``CORPUS_BYTES`` of SST-2 train sentences."""
    from lmalloc.data import PrepareConfig, prepare

    src = data_dir.parent / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    lines = (data_root / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    text, size = [], 0
    for line in lines:
        sentence = line.rsplit("\t", 1)[0].strip()
        text.append(sentence)
        size += len(sentence) + 1
        if size >= CORPUS_BYTES:
            break
    (src / "sst2_sentences.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    cfg = PrepareConfig(vocab_size=VOCAB, chunk_bytes=16_384, dedup_near=False,
                        val_fraction=0.05)
    prepare([src], data_dir, cfg, progress=False)


def pretrain(run_dir: Path, seed: int, steps: int = PRETRAIN_STEPS,
             model: dict[str, int] = MODEL) -> dict[str, Any]:
    """A short LM pretraining of the tiny GPT into ``run_dir/final``."""
    from lmalloc.data.shards import TokenData
    from lmalloc.model.config import GPTConfig
    from lmalloc.train import TrainConfig, Trainer

    data = TokenData(run_dir / "data")
    cfg = GPTConfig(vocab_size=data.vocab_size, **model)
    tc = TrainConfig(lr=3e-3, batch_tokens=16 * model["seq_len"], micro_batch=16,
                     seq_len=model["seq_len"], max_steps=steps, warmup=0.1, eval_every=0,
                     eval_tokens=8192, seed=seed, device="cpu", compile=False, log_every=50)
    return Trainer(cfg, tc, data.dir, run_dir / "final", resume=False).fit().to_dict()


def sst2_task(data_root: Path, n_train: int = N_TRAIN) -> Any:
    """The built-in SST-2 task with a fixed random subset of ``n_train`` train rows of at
    least ``MIN_WORDS`` words."""
    from lmalloc.evaluate.tasks import load_task

    task = load_task("sst2", data_root)
    train = [ex for ex in task.splits["train"] if len(ex.text.split()) >= MIN_WORDS]
    pick = sorted(random.Random(0).sample(range(len(train)), n_train))
    return dataclasses.replace(task, splits={**task.splits, "train": [train[i] for i in pick]})


def run_seed(work: Path, data_root: Path, seed: int, steps: int = FINETUNE_STEPS
             ) -> dict[str, Any]:
    """Prepare (shared, reused), pretrain and fine-tune for one seed; the dev metrics."""
    from lmalloc.evaluate.finetune import finetune_task

    data_dir = work / "data"
    if not (data_dir / "data.json").exists():
        prepare_data(data_root, data_dir)
    run = work / f"run_seed{seed}"
    if not (run / "data").exists():  # each run gets a copy of the shared prepared data
        shutil.copytree(data_dir, run / "data")
    t0 = time.perf_counter()
    pre = pretrain(run, seed)
    res = finetune_task(run, sst2_task(data_root), seed=seed, steps=steps, batch_size=BATCH,
                        lr=LR, out_dir=run / "finetune")
    dev, base = res["metrics"]["dev"], res["baseline"]["majority_class"]["dev"]
    return {"seed": seed, "accuracy": dev["accuracy"], "macro_f1": dev["macro_f1"],
            "confusion_matrix": dev["confusion_matrix"],
            "baseline_accuracy": base["accuracy"], "baseline_macro_f1": base["macro_f1"],
            "baseline_label": base["label"], "pretrain_val_loss": pre["val_loss"],
            "finetune_train_loss": res["train_loss"], "seconds": time.perf_counter() - t0}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["accuracy"] for r in rows]
    f1 = [r["macro_f1"] for r in rows]
    base = rows[0]["baseline_accuracy"]
    return {"accuracy_median": statistics.median(acc), "accuracy_spread": max(acc) - min(acc),
            "accuracy_min": min(acc), "macro_f1_median": statistics.median(f1),
            "macro_f1_spread": max(f1) - min(f1), "baseline_accuracy": base,
            "baseline_macro_f1": rows[0]["baseline_macro_f1"],
            "margin_median": statistics.median(acc) - base, "margin_min": min(acc) - base}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    from lmalloc.evaluate.tasks import default_data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    root = args.data_root or default_data_root()
    if not (root / "sst2" / "train.tsv").is_file():
        print(f"SST-2 not found under {root}; nothing to do", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(run_seed(Path(tmp), root, seed))
            r = rows[-1]
            print(f"seed {seed}: accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
                  f"(majority '{r['baseline_label']}': {r['baseline_accuracy']:.4f} / "
                  f"{r['baseline_macro_f1']:.4f})  {r['seconds']:.1f} s", flush=True)
    summary = summarise(rows)
    print(json.dumps(summary, indent=2))
    from lmalloc.rundir import atomic_write_json

    atomic_write_json(args.out, {
        "benchmark": "downstream", "task": "sst2", "split": "dev",
        "settings": {"vocab": VOCAB, "corpus_bytes": CORPUS_BYTES, "model": MODEL,
                     "pretrain_steps": PRETRAIN_STEPS, "n_train": N_TRAIN, "min_words": MIN_WORDS,
                     "finetune_steps": FINETUNE_STEPS, "batch": BATCH, "lr": LR},
        "peer": "majority-class baseline (most frequent label of the train subset)",
        "per_seed": rows, "summary": summary,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu": platform.processor()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Translation quality of a tiny model: multi30k (English → German) fine-tuning, scored with
sacreBLEU and ROUGE against copying the source sentence (the floor a model must beat).

1. prepare a run's data from the first ``CORPUS_BYTES`` of multi30k train (English and German
   sentences, BPE vocabulary ``VOCAB``);
2. pretrain a 2-layer, 64-wide GPT with 128-token context on it for ``PRETRAIN_STEPS`` steps;
3. fine-tune it on ``N_TRAIN`` train pairs (template "English: {text}\\nGerman:") for
   ``FINETUNE_STEPS`` steps (``lmalloc.evaluate.finetune.finetune_task``);
4. decode the first ``N_EVAL`` val pairs greedily and with beam 2; corpus BLEU (sacreBLEU,
   signature reported) and ROUGE-1/2/L F, next to the same scores of the English source copied
   as the "translation".

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/translation.py --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from downstream import pretrain

RESULTS = Path(__file__).resolve().parent / "results" / "translation.json"
VOCAB = 1024
CORPUS_BYTES = 1_000_000  # of each language
MODEL = {"n_layer": 2, "n_head": 2, "d_model": 64, "seq_len": 128}
PRETRAIN_STEPS = 300
N_TRAIN = 4000
FINETUNE_STEPS = 400
N_EVAL = 200
BATCH = 32
LR = 1e-3


def prepare_data(data_root: Path, data_dir: Path) -> None:
    from lmalloc.data import PrepareConfig, prepare

    src = data_dir.parent / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        text = (data_root / "multi30k" / f"train.{lang}").read_text(encoding="utf-8")
        lines = text[:CORPUS_BYTES].splitlines()[:-1]  # whole sentences only
        for part in range(4):  # a few documents per language (one goes to validation)
            chunk = lines[part::4]
            (src / f"train_{lang}_{part}.txt").write_text("\n".join(chunk) + "\n", "utf-8")
    prepare([src], data_dir, PrepareConfig(vocab_size=VOCAB, dedup_near=False,
                                           val_fraction=0.05), progress=False)


def main(argv: list[str] | None = None) -> int:
    import torch

    from lmalloc.evaluate.finetune import finetune_task
    from lmalloc.evaluate.tasks import default_data_root, load_task
    from lmalloc.rundir import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    root = args.data_root or default_data_root()
    if not (root / "multi30k" / "train.en").is_file():
        print(f"multi30k not found under {root}; nothing to do", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        prepare_data(root, run / "data")
        pre = pretrain(run, args.seed, PRETRAIN_STEPS, MODEL)
        task = load_task("multi30k", root)
        task = dataclasses.replace(task, splits={"train": task.splits["train"][:N_TRAIN],
                                                 "dev": task.splits["dev"]})
        res = finetune_task(run, task, seed=args.seed, steps=FINETUNE_STEPS, batch_size=BATCH,
                            lr=LR, max_eval=N_EVAL, beam=2)
    dev, copy = res["metrics"]["dev"], res["baseline"]["copy_source"]["dev"]
    keys = ("bleu", "rouge1", "rouge2", "rougeL")
    rows = {name: {k: m[k] for k in keys} for name, m in {**dev, "copy_source": copy}.items()}
    for name, m in rows.items():
        print(f"{name:<12} " + "  ".join(f"{k} {m[k]:.3f}" for k in keys))
    out = {"benchmark": "translation", "task": "multi30k en→de", "split": "val",
           "n_eval": N_EVAL, "seed": args.seed, "scores": rows,
           "signature": dev["greedy"]["signature"],
           "settings": {"vocab": VOCAB, "corpus_bytes_per_language": CORPUS_BYTES,
                        "model": MODEL, "pretrain_steps": PRETRAIN_STEPS, "n_train": N_TRAIN,
                        "finetune_steps": FINETUNE_STEPS, "batch": BATCH, "lr": LR},
           "pretrain_val_loss": pre["val_loss"], "finetune_train_loss": res["train_loss"],
           "truncated_prompts": res["truncated_prompts"],
           "seconds": time.perf_counter() - t0,
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads()}}
    atomic_write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("scores", "seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

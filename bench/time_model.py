"""Validate the time model on this CPU: predicted vs measured step time of held-out shapes.

The fit shapes are the ones ``lmalloc profile`` measures (``DEFAULT_SHAPES``); the validation
shapes below are different widths, depths, micro-batches, sequence lengths and vocabularies.
All shapes are measured in one shuffled order (so a change in the machine's load hits fit and
validation alike), each the median of timed steps after warm-up. The peer is the usual
constant-MFU estimate: ``6N·tokens``-style FLOPs (``train_flops_per_token``) at the median
FLOP/s the profile measured (what a budget calculator without a utilisation model does).

    OMP_NUM_THREADS=1 .venv/bin/python bench/time_model.py       # ~3 min on 2 cores

Writes ``bench/results/time_model.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from lmalloc.cost.profile import DEFAULT_SHAPES, BenchShape, measure_training, step_shape
from lmalloc.cost.time_model import fit_time_model, step_time
from lmalloc.rundir import atomic_write_json

VALIDATION_SHAPES = (
    BenchShape(96, 2, 3, 1024, 8, 64),
    BenchShape(160, 3, 5, 512, 4, 128),
    BenchShape(224, 2, 7, 2048, 8, 64),
    BenchShape(288, 2, 6, 1024, 4, 128),
    BenchShape(448, 2, 7, 512, 2, 128),
    BenchShape(128, 6, 4, 1024, 8, 64),
    BenchShape(64, 8, 2, 512, 16, 64),
    BenchShape(256, 3, 4, 4096, 4, 64),
    BenchShape(192, 2, 6, 512, 2, 512),
    BenchShape(320, 3, 5, 2048, 2, 64),
    BenchShape(128, 3, 4, 8192, 4, 128),
    BenchShape(384, 4, 6, 1024, 2, 128),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="bench/results/time_model.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    jobs = [("fit", s) for s in DEFAULT_SHAPES] + [("val", s) for s in VALIDATION_SHAPES]
    random.Random(0).shuffle(jobs)
    t0 = time.time()
    rows = []
    for role, shape in jobs:
        row = measure_training(shape, warmup=2, steps=args.steps)
        rows.append({"role": role, **row})
        print(f"{role} d={shape.d_model} L={shape.n_layer} B={shape.micro_batch} "
              f"T={shape.seq_len} V={shape.vocab_size}: {row['seconds_per_step']:.4f} s",
              flush=True)
    fit_rows = [r for r in rows if r["role"] == "fit"]
    val_rows = [r for r in rows if r["role"] == "val"]
    params = fit_time_model([step_shape(r) for r in fit_rows],
                            [r["seconds_per_step"] for r in fit_rows])
    mfu_rate = statistics.median(r["flops_per_s"] for r in fit_rows)
    for r in rows:
        shape = step_shape(r)
        r["predicted"] = step_time(shape, params)
        r["predicted_constant_mfu"] = shape.tokens * shape.flops_per_token / mfu_rate
        r["error"] = r["predicted"] / r["seconds_per_step"] - 1
        r["error_constant_mfu"] = r["predicted_constant_mfu"] / r["seconds_per_step"] - 1

    def med(key: str, rs: list[dict[str, float]]) -> float:
        return statistics.median(abs(r[key]) for r in rs)

    summary = {
        "validation_shapes": len(val_rows),
        "median_abs_error": med("error", val_rows),
        "max_abs_error": max(abs(r["error"]) for r in val_rows),
        "median_abs_error_constant_mfu": med("error_constant_mfu", val_rows),
        "fit_median_abs_error": med("error", fit_rows),
        "fit_rmse_log": params["rmse_log"],
    }
    result = {"summary": summary, "params": params, "threads": args.threads,
              "torch": torch.__version__, "seconds": time.time() - t0, "rows": rows}
    atomic_write_json(args.out, result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

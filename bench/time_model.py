"""Validate the time model on this CPU: predicted vs measured step time of held-out shapes.

The fit shapes are the ones ``lmalloc profile`` measures (``DEFAULT_SHAPES``); the validation
shapes below are different widths, depths, micro-batches, sequence lengths and vocabularies.
All shapes are measured one at a time in one shuffled order (so a change in the machine's
load hits fit and validation alike), ``--rounds`` times over; a shape's time is the median
over rounds of the median of its timed steps after warm-up. The peers, fitted on the same
measurements in the same run: the usual constant-MFU estimate (``train_flops_per_token`` at
the median FLOP/s of the fit shapes: what a budget calculator without a utilisation model
does) and this model without its output-layer term (``P_head`` = ``P_max``, the model before
issue 20). The load average (``/proc/loadavg``) is recorded before and after.

    OMP_NUM_THREADS=1 .venv/bin/python bench/time_model.py --clock cpu --steps 7  # ~4 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/time_model.py   # wall clock: needs an idle machine

Writes ``bench/results/time_model.json`` (the saved run is ``--clock cpu``;
``time_model_wall_loaded.json`` is a wall-clock run on the loaded machine).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

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
    # added with the output-layer term (issue 20): more vocabularies, widths and depths
    BenchShape(128, 2, 4, 16384, 4, 64),
    BenchShape(256, 2, 4, 8192, 2, 128),
    BenchShape(64, 3, 2, 4096, 8, 128),
    BenchShape(192, 4, 3, 2048, 4, 128),
    BenchShape(320, 2, 5, 1024, 8, 64),
    BenchShape(96, 4, 3, 8192, 2, 256),
    BenchShape(448, 3, 7, 2048, 2, 64),
    BenchShape(160, 5, 5, 1024, 4, 64),
    BenchShape(256, 5, 4, 2048, 2, 256),
    BenchShape(512, 3, 8, 1024, 2, 64),
    BenchShape(64, 2, 2, 32000, 2, 128),
    BenchShape(224, 3, 7, 4096, 8, 64),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time each step by wall clock (what `lmalloc profile` fits) or by "
                         "process CPU time (with --threads 1: the idle-machine wall time, "
                         "robust to other processes' load)")
    ap.add_argument("--out", default="bench/results/time_model.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    jobs = [("fit", s) for s in DEFAULT_SHAPES] + [("val", s) for s in VALIDATION_SHAPES]
    clock = "cpu_seconds_per_step" if args.clock == "cpu" else "seconds_per_step"
    load_before = _loadavg()
    t0 = time.time()
    times: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    rows: list[dict[str, Any]] = [{} for _ in jobs]
    for rnd in range(args.rounds):
        order = list(range(len(jobs)))
        random.Random(rnd).shuffle(order)
        for i in order:
            role, shape = jobs[i]
            row = measure_training(shape, warmup=2, steps=args.steps)
            times[i].append(row[clock])
            rows[i] = {"role": role, **row}
            print(f"round {rnd} {role} d={shape.d_model} L={shape.n_layer} "
                  f"B={shape.micro_batch} T={shape.seq_len} V={shape.vocab_size}: "
                  f"{row['seconds_per_step']:.4f} s wall, {row['cpu_seconds_per_step']:.4f} s "
                  "CPU", flush=True)
    for i, r in enumerate(rows):  # the last round's row, with the chosen clock's median
        r["rounds"] = times[i]
        r["seconds"] = statistics.median(times[i])
        r["flops_per_s"] = r["micro_batch"] * r["seq_len"] * r["flops_per_token"] / r["seconds"]
    fit_rows = [r for r in rows if r["role"] == "fit"]
    val_rows = [r for r in rows if r["role"] == "val"]
    fit_shapes = [step_shape(r) for r in fit_rows]
    fit_secs = [r["seconds"] for r in fit_rows]
    params = fit_time_model(fit_shapes, fit_secs)
    params_no_head = fit_time_model(fit_shapes, fit_secs, tie_head=True)
    mfu_rate = statistics.median(r["flops_per_s"] for r in fit_rows)
    for r in rows:
        shape = step_shape(r)
        r["predicted"] = step_time(shape, params)
        r["predicted_no_head"] = step_time(shape, params_no_head)
        r["predicted_constant_mfu"] = shape.tokens * shape.flops_per_token / mfu_rate
        for err, pred in (("error", "predicted"), ("error_no_head", "predicted_no_head"),
                          ("error_constant_mfu", "predicted_constant_mfu")):
            r[err] = r[pred] / r["seconds"] - 1

    def med(key: str, rs: list[dict[str, float]]) -> float:
        return statistics.median(abs(r[key]) for r in rs)

    summary = {
        "validation_shapes": len(val_rows),
        "median_abs_error": med("error", val_rows),
        "max_abs_error": max(abs(r["error"]) for r in val_rows),
        "median_abs_error_constant_mfu": med("error_constant_mfu", val_rows),
        "median_abs_error_no_head_term": med("error_no_head", val_rows),
        "fit_median_abs_error": med("error", fit_rows),
        "fit_rmse_log": params["rmse_log"],
    }
    result = {"summary": summary, "params": params, "params_no_head_term": params_no_head,
              "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
              "clock": args.clock,
              "loadavg_before": load_before, "loadavg_after": _loadavg(),
              "torch": torch.__version__, "seconds": time.time() - t0, "rows": rows}
    atomic_write_json(args.out, result)
    print(json.dumps(summary, indent=2))


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


if __name__ == "__main__":
    main()

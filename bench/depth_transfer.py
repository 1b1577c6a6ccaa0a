"""Learning-rate transfer across depth: width-only μP against CompleteP and depth-μP.

A GPT of width 64 (4 heads of 16) learns a sparse random Markov chain
(:mod:`lmalloc.testing.markov`) for ``--steps`` AdamW steps at depths 2 and 8, over a log2 grid
of learning rates, in three parametrisations, all with μP in width (base width 64):

* ``width-mup``: no depth scaling (what ``lmalloc run`` uses today);
* ``completep``: residual branches × (2 / n_layer), hidden lr unchanged (α = 1);
* ``depth-mup``: residual branches × sqrt(2 / n_layer), hidden lr × sqrt(2 / n_layer) (α = ½).

For each, the loss-optimal log2 lr at each depth (a parabola through the best grid point and
its neighbours, loss = mean train loss of the last 10 steps, median over seeds), the shift
between depths, and the loss at depth 8 when trained with the depth-2 optimum ("transferred")
against its own optimum ("re-tuned"): Δloss = transferred − re-tuned.

    nice env OMP_NUM_THREADS=1 .venv/bin/python bench/depth_transfer.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from lmalloc.model.config import GPTConfig
from lmalloc.rundir import atomic_write_json
from lmalloc.testing.markov import markov_batches, tail_loss

RESULTS = Path(__file__).resolve().parent / "results" / "depth_transfer.json"
V, T, B, WIDTH, BASE_DEPTH = 64, 32, 16, 64, 2
PARAMS = {"width-mup": None, "completep": 1.0, "depth-mup": 0.5}


def train_loss(depth: int, lr: float, alpha: float | None, data: list, seed: int) -> float:
    """Mean train loss of the last 10 AdamW steps (inf if it diverged)."""
    cfg = GPTConfig(vocab_size=V, n_layer=depth, n_head=WIDTH // 16, d_model=WIDTH, seq_len=T,
                    mup_base_width=WIDTH,
                    mup_base_depth=None if alpha is None else BASE_DEPTH,
                    depth_alpha=1.0 if alpha is None else alpha)
    return tail_loss(cfg, lr, data, tail=10, seed=seed)


def refined_optimum(log2_lrs: list[float], losses: list[float]) -> float:
    """log2 of the best lr, refined by a parabola through the best point and neighbours."""
    i = min(range(len(losses)), key=losses.__getitem__)
    if 0 < i < len(losses) - 1 and all(math.isfinite(v) for v in losses[i - 1:i + 2]):
        a, b, c = losses[i - 1:i + 2]
        if a - 2 * b + c > 0:
            return log2_lrs[i] + 0.5 * (a - c) / (a - 2 * b + c)
    return log2_lrs[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--deep", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = markov_batches(V, T, B, args.steps)
    grid = [float(k) for k in range(-11, -1)]
    seeds = range(args.seeds)
    t0 = time.perf_counter()

    def loss(depth: int, log2_lr: float, alpha: float | None) -> float:
        return statistics.median(train_loss(depth, 2.0**log2_lr, alpha, data, s) for s in seeds)

    out: dict = {"steps": args.steps, "seeds": args.seeds, "width": WIDTH,
                 "depths": [BASE_DEPTH, args.deep], "grid_log2_lr": grid, "results": {}}
    for name, alpha in PARAMS.items():
        curves = {d: [loss(d, g, alpha) for g in grid] for d in (BASE_DEPTH, args.deep)}
        best = {d: refined_optimum(grid, c) for d, c in curves.items()}
        transferred = loss(args.deep, best[BASE_DEPTH], alpha)
        retuned = loss(args.deep, best[args.deep], alpha)
        out["results"][name] = {
            "curves": {str(d): c for d, c in curves.items()},
            "best_log2_lr": {str(d): b for d, b in best.items()},
            "shift_log2": best[args.deep] - best[BASE_DEPTH],
            "deep_loss_transferred": transferred, "deep_loss_retuned": retuned,
            "delta_loss": transferred - retuned,
        }
        print(name, json.dumps({k: v for k, v in out["results"][name].items()
                                if k != "curves"}), flush=True)
    out["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(RESULTS, out)
    print(f"wrote {RESULTS} ({out['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

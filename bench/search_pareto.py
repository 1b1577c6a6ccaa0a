"""Pruning in a Pareto search, measured: hypervolume at equal compute, with and without it.

Each study is ``run_search`` (what ``lmalloc search --second-objective params`` runs) on the
``shakespeare_pareto`` task of ``bench/search_realtask.py`` (Tiny Shakespeare; learning rate,
warmup, 1-3 layers, width 32/64/96), strategy ``auto`` (TPE for two objectives), under the
same FLOPs budget (``--budget-trials`` full trials of the 2-layer, 64-wide base recipe).
``pareto`` prunes by :mod:`lmalloc.search.pareto_prune` (the default pruner setting, asha);
``none`` trains every trial to the end. Pruned trials' partial FLOPs are charged.

Score: the hypervolume of the completed trials' (val bpb, parameters) points after k full
trials' worth of FLOPs, against one reference point for every study (the worst val bpb and
the most parameters any completed trial of any study had, times 1.01), normalised by the
reference box; medians over seeds.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_pareto.py --seeds 3 --jobs 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_realtask as rt  # noqa: E402
from lmalloc.rundir import atomic_write_json, read_json  # noqa: E402
from lmalloc.search.pareto_prune import hypervolume_2d  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_pareto.json"
ARMS = {"pareto": "asha", "none": "none"}
CHECKPOINTS = (2, 4, 6, 8, 12)


def _one(arm: str, seed: int, budget: float) -> dict[str, Any]:
    task = rt.Task(budget_trials=budget, name="shakespeare_pareto")
    path = rt.CACHE / "results" / task.tag() / f"pareto_{arm}_s{seed}.json"
    if path.is_file():
        return dict(read_json(path))
    r = rt.run_study("auto", seed, task, pruner=ARMS[arm], second_objective="params",
                     label=f"_{arm}")
    r["arm"] = arm
    atomic_write_json(path, r)
    return r


def hv_curve(run: dict[str, Any], ref: tuple[float, float], at: float) -> float:
    """Normalised hypervolume of the completed points charged within ``at`` FLOPs."""
    spent, pts = 0.0, []
    for t in run["trials"]:
        spent += t["flops"]
        if spent > at * (1 + 1e-9):
            break
        if t.get("values"):
            pts.append(t["values"])
    return hypervolume_2d(pts, ref) / (ref[0] * ref[1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    pts = [t["values"] for r in runs for t in r["trials"] if t.get("values")]
    ref = (max(p[0] for p in pts) * 1.01, max(p[1] for p in pts) * 1.01)
    unit = runs[0]["unit_flops"]
    out: dict[str, Any] = {"ref": ref, "by": {}}
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        out["by"][arm] = {
            "seeds": len(rs),
            "median_trials": float(np.median([len(r["trials"]) for r in rs])),
            "median_complete": float(np.median(
                [sum(bool(t.get("values")) for t in r["trials"]) for r in rs])),
            "hv": {str(k): [hv_curve(r, ref, k * unit) for r in rs] for k in CHECKPOINTS
                   if k <= runs[0]["budget_flops"] / unit + 1e-9},
        }
        out["by"][arm]["median_hv"] = {k: float(np.median(v))
                                       for k, v in out["by"][arm]["hv"].items()}
    return out


def table(summary: dict[str, Any]) -> str:
    ks = list(next(iter(summary["by"].values()))["median_hv"])
    lines = ["| pruning | trials (complete) | " + " | ".join(f"HV at {k}" for k in ks)
             + f" | HV at {ks[-1]} per seed |", "|---|---|" + "---|" * (len(ks) + 1)]
    for arm, r in summary["by"].items():
        hv = " | ".join(f"{r['median_hv'][k]:.4f}" for k in ks)
        seeds = " ".join(f"{v:.4f}" for v in r["hv"][ks[-1]])
        lines.append(f"| {arm} | {r['median_trials']:.0f} ({r['median_complete']:.0f}) | {hv} "
                     f"| {seeds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget-trials", type=float, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    rt.prepare_data(task="shakespeare_pareto")
    todo = [(arm, k) for k in range(args.seeds) for arm in ARMS]  # alternating the arms
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(_one, *zip(*todo, strict=True),
                             [args.budget_trials] * len(todo)))
    summary = summarise(runs)
    atomic_write_json(args.out, {"budget_trials": args.budget_trials, "seeds": args.seeds,
                                 "space": rt.PARETO_SPACE, "summary": summary, "runs": runs})
    print(table(summary))
    return summary


if __name__ == "__main__":
    main()

"""Trial throughput of the search backends: local processes versus Ray tasks, in one run.

The same tiny search (a 1-layer GPT trained on 5,120 synthetic tokens, random sampler, no
pruning, ``--trials`` trials) runs with 1, 2 and 4 workers on each backend:

* ``local``: ``run_search(workers=W)`` — this process for W = 1, else W spawned processes on
  one SQLite study (each with cpu_count // W torch threads, at least 1);
* ``ray``: ``run_search`` with ``backend = "ray"`` against the head of
  ``scripts/ensure_ray.sh`` (2 CPUs): W trials in flight, each declaring min(1, 2 / W) CPUs
  (so 4 workers share 2 CPUs, like 4 local processes on this 2-core machine) and so one
  torch thread, like the local trials (this process runs with 1 thread; spawned processes
  get cpu_count // W, at least 1).

Each run reports trials per minute over its whole wall time (what a user waits for, start-up
included: spawning processes or Ray workers that import torch) and in steady state ((n - 1)
trials over the time from the first trial's end to the last's). The per-trial overhead of a
backend is its median trial duration (Optuna's start to complete, trials after the first)
with one worker minus the median duration of a plain in-process trial: the same objective
called directly on an in-memory study (trials that pay for a worker's start-up, the first W
of a run, are left out of the medians of trial durations). Runs alternate (local W=1, ray
W=1, local W=2, ...) for ``--repeats`` rounds; figures are medians over rounds.

    sh scripts/private_net.sh sh -c 'sh scripts/ensure_ray.sh start &&
      OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/trial_throughput.py;
      sh scripts/ensure_ray.sh stop'

(Ray binds every interface, so the head runs in a loopback-only network namespace.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "trial_throughput.json"
REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path) -> Path:
    """A run directory with synthetic token data (the integration tests' generator)."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from _train_data import LR_SPACE_TOML, make_data, tiny_recipe_toml

    make_data(root / "data")
    (root.parent / "tiny.toml").write_text(tiny_recipe_toml())
    (root.parent / "space.toml").write_text(LR_SPACE_TOML)
    return root


def settings(run: Path, n: int, **kw: Any) -> Any:
    from lmalloc.search import study as st

    s = st.build_settings(run, space=run.parent / "space.toml", recipe=run.parent / "tiny.toml",
                          strategy="random", n_trials=n, pruner="none")
    for key, value in kw.items():
        setattr(s, key, value)
    return s


def durations(run: Path, workers: int) -> tuple[list[float], list[float]]:
    """Start→complete seconds of the trials after the first ``workers`` (those pay for the
    workers' start-up), and every trial's completion time (epoch s), in order."""
    import optuna

    study = optuna.load_study(study_name="explore", storage=f"sqlite:///{run / 'study.db'}")
    done = sorted((t for t in study.trials if t.datetime_complete is not None),
                  key=lambda t: t.datetime_start)
    warm = done[workers:] or done
    return ([(t.datetime_complete - t.datetime_start).total_seconds() for t in warm],
            sorted(t.datetime_complete.timestamp() for t in done))


def one_run(backend: str, workers: int, n: int, address: str, tmp: Path) -> dict[str, Any]:
    from lmalloc.search import study as st

    run = make_run(Path(tempfile.mkdtemp(dir=tmp)) / "run")
    extra: dict[str, Any] = {}
    if backend == "ray":
        extra = {"backend": "ray", "address": address, "trial_cpus": min(1.0, 2 / workers)}
    s = settings(run, n, **extra)
    t0 = time.time()
    summary = st.run_search(s, workers=workers)
    wall = time.time() - t0
    per_trial, ends = durations(run, workers)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) * 60 if len(ends) > 1 else None
    return {"backend": backend, "workers": workers, "trials": n, "wall_s": wall,
            "counts": summary["counts"], "trials_per_min": n / wall * 60,
            "steady_trials_per_min": steady, "first_trial_end_s": ends[0] - t0,
            "median_trial_s": statistics.median(per_trial)}


def plain_trials(n: int, tmp: Path) -> list[float]:
    """Seconds per trial of the same objective called directly on an in-memory study."""
    import optuna

    from lmalloc.search.study import BudgetedObjective

    run = make_run(Path(tempfile.mkdtemp(dir=tmp)) / "run")
    objective = BudgetedObjective(settings(run, n))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.NopPruner())
    out = []
    for _ in range(n):
        trial = study.ask()
        t0 = time.perf_counter()
        value = objective(trial)
        out.append(time.perf_counter() - t0)
        study.tell(trial, value)
    return out[1:]  # the first one pays for torch's lazy initialisation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--address", default="127.0.0.1:" + os.environ.get("LMALLOC_RAY_PORT",
                                                                      "6390"))
    p.add_argument("--backends", default="local,ray")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = [int(w) for w in a.workers.split(",")]
    backends = a.backends.split(",")
    runs: list[dict[str, Any]] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="trial_throughput_") as d:
        tmp = Path(d)
        for r in range(a.repeats):
            plain += plain_trials(a.trials, tmp)
            for w in workers:
                for b in backends:
                    row = one_run(b, w, a.trials, a.address, tmp)
                    row["round"] = r
                    runs.append(row)
                    print(f"round {r} {b:5s} W={w}: {row['trials_per_min']:.1f} trials/min "
                          f"(steady {row['steady_trials_per_min'] or 0:.1f}), wall "
                          f"{row['wall_s']:.1f} s, {row['counts']}", flush=True)
    summary = summarize(runs, plain, backends, workers)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_avg_at_end": os.getloadavg()},
           "args": vars(a), "plain_trial_s": plain, "runs": runs, "summary": summary,
           "note": "2-core machine shared with other jobs (load average above): absolute "
                   "numbers are noisy; compare backends within this run only"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print_table(summary)
    print(f"wrote {RESULTS}")


def summarize(runs: list[dict[str, Any]], plain: list[float], backends: list[str],
              workers: list[int]) -> dict[str, Any]:
    med = statistics.median
    base = med(plain)
    table = []
    for b in backends:
        for w in workers:
            rows = [r for r in runs if r["backend"] == b and r["workers"] == w]
            table.append({
                "backend": b, "workers": w,
                "trials_per_min": med(r["trials_per_min"] for r in rows),
                "steady_trials_per_min": med(r["steady_trials_per_min"] or 0 for r in rows),
                "first_trial_end_s": med(r["first_trial_end_s"] for r in rows),
                "median_trial_s": med(r["median_trial_s"] for r in rows),
            })
    overhead = {b: next(t["median_trial_s"] for t in table if t["backend"] == b
                        and t["workers"] == min(workers)) - base for b in backends}
    return {"plain_trial_s": base, "table": table, "overhead_per_trial_s": overhead}


def print_table(summary: dict[str, Any]) -> None:
    print(f"\nplain in-process trial: {summary['plain_trial_s']:.2f} s (median)")
    print(f"{'backend':8s} {'W':>2s} {'trials/min':>10s} {'steady':>8s} {'1st end s':>9s} "
          f"{'trial s':>8s}")
    for t in summary["table"]:
        print(f"{t['backend']:8s} {t['workers']:>2d} {t['trials_per_min']:>10.1f} "
              f"{t['steady_trials_per_min']:>8.1f} {t['first_trial_end_s']:>9.1f} "
              f"{t['median_trial_s']:>8.2f}")
    for b, s in summary["overhead_per_trial_s"].items():
        print(f"overhead per trial, {b}: {s:+.2f} s versus the plain in-process trial")


if __name__ == "__main__":
    main()

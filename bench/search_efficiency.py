"""Search efficiency: how many trials each strategy needs to get close to the optimum.

Every strategy of :mod:`lmalloc.search.strategies` (pg and dqn included) and the peers,
Optuna's default ``TPESampler()`` and ``RandomSampler()``, run on the same objectives with the
same seeds, one study per (strategy, objective, seed), ``n_jobs=1``.

Definitions (on test functions "compute" = trials; the real task will add its own objective
to ``OBJECTIVES`` and measure compute in FLOPs):

* incumbent after k trials: the trial with the best *observed* value among the first k; its
  *noiseless* value is what we score (on noisy objectives a lucky draw does not count).
* gap-closed target at tolerance tol: ``f_target = f_best + tol · (f_ref − f_best)``, where
  ``f_ref`` is the median value of a uniformly random point and ``f_best`` either the known
  optimum ("opt") or the best noiseless value any strategy/seed found in this run ("best").
  "Within 1 %" means closing 99 % of the gap from a typical random point to the optimum —
  a relative tolerance that works when the optimum is 0 (Levy) or negative (Hartmann).
* trials-to-target: the first k whose incumbent reaches the target; per strategy the median
  over seeds, with seeds that never reach it counted as infinite (so the median is
  "not reached", printed ``>N``, when half or more of the seeds miss).
* "to TPE's final (x TPE)": trials to reach the median best value that the peer, Optuna's
  default ``TPESampler()``, has after all its trials; in brackets as a fraction of the peer's
  trial count — the "compute relative to default TPE" that ``auto``'s target is stated in.
* GP-based samplers (``gp``, and ``auto`` where it picks GP) get ``--gp-trials`` (60) trials,
  30 on spaces with categoricals, because each GP trial costs 0.1-1 s of CPU here.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_efficiency.py   # 10-15 min on 2 busy cores
    .venv/bin/python bench/search_efficiency.py --resummarise       # table from the saved JSON
    .venv/bin/python bench/search_efficiency.py --seeds 2 --trials 30 --strategies random,pg

Writes ``bench/results/search_efficiency.json`` (per-seed curves and the medians) and prints
the table.

The real task (``--real-task``, objective and definitions in ``bench/search_realtask.py``):
tuning a tiny GPT on Tiny Shakespeare, every trial a real training through ``run_search``,
each study limited to the FLOPs of ``--budget-trials`` full trials (pruned and failed trials'
partial FLOPs included); compute is FLOPs and "within 1 %" a plain relative 1 % of the best
val bpb anyone found. Finished (strategy, seed) studies are saved under
``$LMALLOC_BENCH_CACHE`` (``/tmp/lmalloc_bench``) and skipped when the run is restarted::

    .venv/bin/python bench/search_efficiency.py --real-task --jobs 2   # ~55 min on 2 busy cores
    .venv/bin/python bench/search_efficiency.py --quick                # smoke check, < 1 min
    .venv/bin/python bench/search_efficiency.py --real-task --jobs 0   # summarise saved studies
    .venv/bin/python bench/search_efficiency.py --real-task --task wikitext2   # the second task

(``--task wikitext2``: a 4-layer GPT on WikiText-2 with the learning-rate range shifted off
the optimum; ``bench/search_two_tasks.py`` tabulates both tasks from the saved studies.)

writes ``bench/results/search_realtask.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lmalloc.rundir import atomic_write_json, read_json  # noqa: E402
from lmalloc.search import SearchSpace, make_sampler, strategy_names  # noqa: E402
from lmalloc.search.strategies import MAX_GRID_SIZE, auto_choice  # noqa: E402
from testfunctions import FUNCTIONS, TestFunction  # noqa: E402

PEER = "peer:tpe_default"
RESULTS = Path(__file__).resolve().parent / "results" / "search_efficiency.json"
REALTASK_RESULTS = RESULTS.with_name("search_realtask.json")
TOLERANCES = (0.1, 0.05, 0.01)


@dataclass(frozen=True)
class Objective:
    """A benchmark objective: ``run(trial) -> (observed, noiseless)`` for a given seed."""

    name: str
    space: SearchSpace
    make: Callable[[int], Callable[[optuna.Trial], tuple[float, float]]]
    f_star: float | None
    f_ref: float
    gp_trials: int | None = None  # a lower cap for GP where it is slow (categoricals)


def _from_testfunction(fn: TestFunction) -> Objective:
    def make(seed: int) -> Callable[[optuna.Trial], tuple[float, float]]:
        def run(trial: optuna.Trial) -> tuple[float, float]:
            params = fn.space.suggest(trial)
            rng = np.random.default_rng([seed, trial.number, 7])
            return fn.observe(params, rng), fn.f(params)

        return run

    # GP's acquisition search over categoricals costs ~1-3 s per trial on 2 cores
    gp_trials = 30 if any(p.type == "categorical" for p in fn.space.params) else None
    return Objective(fn.name, fn.space, make, fn.f_star, fn.f_ref(), gp_trials)


OBJECTIVES: dict[str, Callable[[], Objective]] = {
    name: (lambda fn=fn: _from_testfunction(fn)) for name, fn in FUNCTIONS.items()
}
"""The registry of objectives; the real task (tiny-GPT trials) is added here later."""


def _peer_tpe(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed)  # Optuna's defaults, only seeded


def _tpe_grouped(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """A candidate for auto's TPE branch that was measured and rejected (not better)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True
        )


SAMPLERS: dict[str, Callable[[SearchSpace, int], optuna.samplers.BaseSampler]] = {
    "peer:tpe_default": _peer_tpe,
    "peer:random": lambda space, seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe_grouped": _tpe_grouped,  # a rejected candidate for auto's TPE branch
    **{
        name: (lambda space, seed, name=name: make_sampler(name, space, seed))
        for name in strategy_names()
        if name not in ("tpe", "random")  # identical to the peers above
    },
}


def run_one(sampler_name: str, objective: Objective, seed: int, n_trials: int) -> dict[str, Any]:
    """One study: per-trial observed and noiseless values, and the sampler's wall time."""
    observed: list[float] = []
    noiseless: list[float] = []
    run = objective.make(seed)

    def fn(trial: optuna.Trial) -> float:
        obs, true = run(trial)
        observed.append(obs)
        noiseless.append(true)
        return obs

    sampler = SAMPLERS[sampler_name](objective.space, seed)
    study = optuna.create_study(sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(fn, n_trials=n_trials)
    seconds = time.perf_counter() - t0
    return {"seed": seed, "observed": observed, "noiseless": noiseless, "seconds": seconds}


def incumbent_curve(observed: list[float], noiseless: list[float]) -> list[float]:
    """Noiseless value of the best-observed trial after each trial."""
    curve, best_obs, best_true = [], math.inf, math.inf
    for obs, true in zip(observed, noiseless, strict=True):
        if obs < best_obs:
            best_obs, best_true = obs, true
        curve.append(best_true)
    return curve


def trials_to(curve: list[float], target: float) -> float:
    for k, v in enumerate(curve, start=1):
        if v <= target:
            return float(k)
    return math.inf


def summarise(objective: Objective, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over seeds per strategy: curve, trials to each target, time per trial."""
    curves = {
        s: [incumbent_curve(r["observed"], r["noiseless"]) for r in rs] for s, rs in runs.items()
    }
    f_best_found = min(c[-1] for cs in curves.values() for c in cs)
    refs = {"best": f_best_found}
    if objective.f_star is not None:
        refs["opt"] = objective.f_star
    out: dict[str, Any] = {"f_ref": objective.f_ref, "f_best_found": f_best_found, "by": {}}
    for s, cs in curves.items():
        row: dict[str, Any] = {
            "n_trials": len(cs[0]),
            "curves": cs,
            "median_curve": np.median(np.array(cs), axis=0).tolist(),
            "final": [c[-1] for c in cs],
            "median_final": float(np.median([c[-1] for c in cs])),
            "sec_per_trial": float(
                np.median([r["seconds"] / len(c) for r, c in zip(runs[s], cs, strict=True)])
            ),
        }
        for ref_name, f_best in refs.items():
            for tol in TOLERANCES:
                target = f_best + tol * (objective.f_ref - f_best)
                ks = [trials_to(c, target) for c in cs]
                key = f"trials_to_{ref_name}_{tol:g}"
                row[key] = ks
                row[f"median_{key}"] = float(np.median(ks))
        out["by"][s] = row
    _add_peer_ratio(out["by"])
    return out


def _add_peer_ratio(by: dict[str, dict[str, Any]]) -> None:
    """Trials each strategy needs to match what the peer (default TPE) reaches in its full run:
    the "compute to match TPE" that the ``auto`` target is stated in (at most half of TPE's)."""
    if PEER not in by:
        return
    target = by[PEER]["median_final"]
    n_peer = by[PEER]["n_trials"]
    for row in by.values():
        ks = [trials_to(c, target) for c in row["curves"]]
        row["median_trials_to_peer_final"] = float(np.median(ks))
        row["compute_vs_peer"] = row["median_trials_to_peer_final"] / n_peer
    for row in by.values():
        del row["curves"]  # per-seed values are in results["runs"]


def _fmt_k(k: float, n: int) -> str:
    return f">{n}" if math.isinf(k) else f"{k:.0f}"


def _peer_col(row: dict[str, Any]) -> str:
    k = row.get("median_trials_to_peer_final", math.inf)
    if math.isinf(k):
        return f">{row['n_trials']}"
    return f"{k:.0f} ({row['compute_vs_peer']:.2f})"


CHECKPOINTS = (10, 20, 40, 60, 100)


def anytime_table(results: dict[str, Any]) -> str:
    """The anytime curves, condensed: median incumbent (noiseless) value after k trials."""
    head = " | ".join(f"k={k}" for k in CHECKPOINTS)
    lines = [f"| objective | strategy | {head} |", "|---|---|" + "---|" * len(CHECKPOINTS)]
    for obj, summary in results["objectives"].items():
        for s, row in summary["by"].items():
            curve = row["median_curve"]
            cells = [f"{curve[k - 1]:.4g}" if k <= len(curve) else "" for k in CHECKPOINTS]
            lines.append(f"| {obj} | {s} | {' | '.join(cells)} |")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per (objective, strategy); trials to a target are medians
    over seeds (``>N``: half or more of the seeds never got there in N trials)."""
    lines = [
        "| objective | strategy | trials | median final | to 10% | to 5% | to 1% "
        "| to 1% of best found | to TPE's final (x TPE) | ms/trial |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for obj, summary in results["objectives"].items():
        for s, row in summary["by"].items():
            n = row["n_trials"]
            cols = [
                _fmt_k(row.get(f"median_trials_to_opt_{tol:g}", math.inf), n)
                for tol in (0.1, 0.05, 0.01)
            ]
            lines.append(
                f"| {obj} | {s} | {n} | {row['median_final']:.4g} | {' | '.join(cols)} | "
                f"{_fmt_k(row['median_trials_to_best_0.01'], n)} | {_peer_col(row)} | "
                f"{1000 * row['sec_per_trial']:.1f} |"
            )
    return "\n".join(lines)


def resummarise(path: Path) -> dict[str, Any]:
    """Recompute the summaries and the table from the per-seed runs stored in ``path``."""
    results: dict[str, Any] = read_json(path, "benchmark results")
    for obj_name, runs in results["runs"].items():
        ordered = {s: runs[s] for s in SAMPLERS if s in runs}  # the JSON sorts its keys
        results["objectives"][obj_name] = summarise(OBJECTIVES[obj_name](), ordered)
    atomic_write_json(path, results)
    print(table(results), anytime_table(results), sep="\n\n")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument(
        "--gp-trials", type=int, default=60, help="trials of GP-based samplers (~100x slower)"
    )
    ap.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--resummarise", action="store_true", help="recompute medians/table from --out's runs"
    )
    ap.add_argument("--real-task", action="store_true",
                    help="the real task: tiny-GPT trials under a FLOPs budget (search_realtask)")
    ap.add_argument("--budget-trials", type=float, default=12,
                    help="real task: FLOPs budget per study, in full trials of the base recipe")
    ap.add_argument("--trial-tokens", type=int, default=24576,
                    help="real task: training tokens of a full trial (the fidelity's maximum)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="real task: parallel studies (0: only summarise the saved studies)")
    ap.add_argument("--plot", type=Path, default=None,
                    help="real task: write the anytime curves (PNG) here")
    ap.add_argument("--task", default="shakespeare", choices=("shakespeare", "wikitext2"),
                    help="real task: which corpus, model and space (search_realtask.TASKS)")
    ap.add_argument("--quick", action="store_true",
                    help="real task smoke check: 3 strategies, 1 seed, short trials (< 1 min)")
    args = ap.parse_args(argv)
    if args.real_task or args.quick:
        return _real_task(args)
    args.out = args.out or RESULTS
    args.strategies = args.strategies or ",".join(SAMPLERS)
    if args.resummarise:
        return resummarise(args.out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    results: dict[str, Any] = {
        "seeds": args.seeds,
        "trials": args.trials,
        "gp_trials": args.gp_trials,
        "tolerances": list(TOLERANCES),
        "optuna": optuna.__version__,
        "objectives": {},
        "runs": {},
    }
    t_start = time.perf_counter()
    for obj_name in args.objectives.split(","):
        objective = OBJECTIVES[obj_name]()
        runs: dict[str, list[dict[str, Any]]] = {}
        for s in args.strategies.split(","):
            if s == "grid" and objective.space.grid_size() > MAX_GRID_SIZE:
                print(f"{obj_name:14s} {s:22s} skipped: grid too large", flush=True)
                continue
            same = {"gp": "gp", "tpe": PEER}[auto_choice(objective.space)]
            if s == "auto" and same in runs:  # the same sampler with the same seeds
                runs[s] = runs[same]
                print(f"{obj_name:14s} {s:22s} = {same} (same sampler, same seeds)")
                continue
            is_gp = isinstance(SAMPLERS[s](objective.space, 0), optuna.samplers.GPSampler)
            gp_n = min(objective.gp_trials or args.gp_trials, args.gp_trials)
            n = gp_n if is_gp else args.trials
            runs[s] = [run_one(s, objective, seed, n) for seed in range(args.seeds)]
            print(f"{obj_name:14s} {s:22s} {time.perf_counter() - t_start:7.1f}s", flush=True)
        results["objectives"][obj_name] = summarise(objective, runs)
        results["runs"][obj_name] = runs
    results["seconds"] = time.perf_counter() - t_start
    atomic_write_json(args.out, results)
    print(table(results), anytime_table(results), sep="\n\n")
    return results


def _real_task(args: argparse.Namespace) -> dict[str, Any]:
    import search_realtask as rt

    default = REALTASK_RESULTS if args.task == "shakespeare" else REALTASK_RESULTS.with_name(
        f"search_realtask_{args.task}.json")
    out = args.out or (rt.QUICK_RESULTS if args.quick else default)
    if args.resummarise:
        results = rt.resummarise(out)
    else:
        results = _run_real_task(rt, args, out)
    if args.plot:
        rt.plot(results["summary"], args.plot, rt.TASKS[args.task].title)
    return results


def _run_real_task(rt: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    strategies = args.strategies.split(",") if args.strategies else None
    if args.quick:
        strategies = strategies or ["peer:tpe_default", "auto", "gp"]
        return rt.main(strategies, 1, rt.Task(budget_trials=3, quick=True, name=args.task),
                       args.jobs, out)
    task = rt.Task(budget_trials=args.budget_trials, max_tokens=args.trial_tokens,
                   name=args.task)
    return rt.main(strategies, args.seeds, task, args.jobs, out)


if __name__ == "__main__":
    main()

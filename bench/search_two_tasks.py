"""The two-task table of issue 19: compute to within 1 % and 2 % as a fraction of default
TPE's, and the final value, medians over seeds, per strategy and real task.

It runs nothing: it collects the studies ``bench/search_efficiency.py --real-task [--task
wikitext2]`` saved under ``$LMALLOC_BENCH_CACHE`` and, for strategies with no saved study of
the first task, the runs kept in ``bench/results/search_realtask.json`` (the 12-trial-budget
run of 2026-11-23; its ``dqn`` was the linear ε-greedy learner, listed here as ``bandit``,
the same algorithm under its new name). ``auto`` is whatever strategy it is identical to on
the task's space (``search_realtask.auto_alias``). Usage::

    .venv/bin/python bench/search_two_tasks.py --seeds 5 --budget-trials 12
    .venv/bin/python bench/search_two_tasks.py --seeds 5 --budget-trials 24 \
        --arms dqn@asha-ties,dqn@hyperband --out bench/results/search_two_tasks_b24.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_realtask as rt  # noqa: E402
from lmalloc.rundir import atomic_write_json, read_json  # noqa: E402

STRATEGIES = ("peer:tpe_default", "peer:random", "gp", "pg", "auto", "dqn", "bandit")
OLD = Path(__file__).resolve().parent / "results" / "search_realtask.json"
OUT = OLD.with_name("search_two_tasks.json")
RENAMED = {"bandit": "dqn"}  # new name -> name in the old results


def collect(task: rt.Task, seeds: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Per strategy, its saved studies (and where they came from)."""
    alias = rt.auto_alias(task.spec.space)
    old = read_json(OLD) if task.name == "shakespeare" and OLD.is_file() else {}
    # (only at the old results' own budget: never mix budgets in one table)
    old = old["runs"] if old.get("budget_trials") == task.budget_trials else {}
    runs, source = {}, {}
    for s in STRATEGIES:
        src = alias if s == "auto" and alias else s
        paths = [rt._study_path(task, src, k) for k in range(seeds)]
        done = [read_json(p) for p in paths if p.is_file()]
        same = f" (= {alias})" if s == "auto" else ""
        if done:
            runs[s], source[s] = done, "this run" + same
        elif RENAMED.get(src, src) in old:
            runs[s] = old[RENAMED.get(src, src)][:seeds]
            source[s] = f"2026-11-23 results ({RENAMED.get(src, src)!r}){same}"
    return runs, source


def table(summary: dict[str, Any], source: dict[str, str]) -> str:
    lines = ["| strategy | seeds | median final bpb | to within 1 % (seeds reaching) | "
             "× default TPE (1 %) | to within 2 % | × default TPE (2 %) | studies from |",
             "|---|---|---|---|---|---|---|---|"]
    by = summary["by"]
    peer = by.get(rt.PEER, {})
    budget = peer.get("spent_units", math.inf)
    for s, r in by.items():
        one, two = r["median_units_to_1pct"], r["median_units_to_0.02"]
        p1, p2 = peer.get("median_units_to_1pct", math.inf), peer.get("median_units_to_0.02",
                                                                         math.inf)
        lines.append(
            f"| {s} | {r['seeds']} | {r['median_final']:.4f} | {rt._u(one)} "
            f"({r['reached_1pct']}/{r['seeds']}) | {_ratio(one, p1, budget)} | {rt._u(two)} | "
            f"{_ratio(two, p2, budget)} | {source[s]} |")
    return "\n".join(lines)


def _ratio(x: float, peer: float, budget: float) -> str:
    """``x`` over default TPE's compute; where TPE's median never got there, over its whole
    budget, printed as an upper bound (``< r``)."""
    if math.isinf(x):
        return "never"
    return f"< {x / budget:.2f}" if math.isinf(peer) else f"{x / peer:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget-trials", type=float, default=12)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--arms", default="", help="extra saved arms (e.g. dqn@asha-ties), shown "
                    "against the reference of the strategies above")
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    out: dict[str, Any] = {"budget_trials": args.budget_trials, "tasks": {}}
    for name in ("shakespeare", "wikitext2"):
        task = rt.Task(budget_trials=args.budget_trials, name=name)
        runs, source = collect(task, args.seeds)
        if rt.PEER not in runs:
            print(f"{name}: no default-TPE studies saved; skipped")
            continue
        summary = rt.summarise(runs)
        for a in arms:
            done = [read_json(p) for k in range(args.seeds)
                    if (p := rt._study_path(task, a, k)).is_file()]
            if done:
                runs[a], source[a] = done, "this run"
        if arms:
            summary = rt.summarise(runs, f_best=summary["f_best_found"])
        out["tasks"][name] = {"title": task.spec.title, "source": source, "summary": summary}
        print(f"\n{task.spec.title} (best found {summary['f_best_found']:.4f})\n")
        print(table(summary, source))
    atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()

"""What the run's own ladder gives: `lmalloc run`'s stages up to the plan, then the table.

Runs prepare → split → search → ladder → fit → plan of ``lmalloc run`` in ``RUN`` (resumable:
a rerun skips what is done) on the built-in corpus, and prints the ladder's points, the fitted
law, its degeneracy diagnosis and the planned N. A FLOP budget (``1e14flops``) makes the design
and every training the same on any machine, so two probes compare settings, not machine load.

``--width-only`` hands the ladder and the plan the search's learning rate under width-only μP
(as ``lmalloc run`` did before CompleteP was on): the comparison that measures what depth
transfer changes at equal design and equal learning rate.

    OMP_NUM_THREADS=2 .venv/bin/python bench/ladder_probe.py runs/probe-cp --budget 1e14flops
    OMP_NUM_THREADS=2 .venv/bin/python bench/ladder_probe.py runs/probe-w --budget 1e14flops \
        --width-only
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from lmalloc.plan.recipe import Recipe, SearchResult
from lmalloc.run.context import RunOptions
from lmalloc.run.pipeline import run_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--budget", default="1e14flops")
    ap.add_argument("--min-params", type=float, default=Recipe().min_params)
    ap.add_argument("--width-only", action="store_true")
    a = ap.parse_args()
    if a.width_only:  # the proxy's depth is ignored downstream: no CompleteP scaling
        SearchResult.base_depth = property(lambda self: None)  # type: ignore[method-assign,assignment]
    run_pipeline(a.run, RunOptions(budget=a.budget, recipe=Recipe(min_params=a.min_params)),
                 say=print, until="train")
    rows = list(csv.DictReader(open(a.run / "ladder.csv")))
    print("N,D,loss")
    for r in rows:
        print(f"{int(float(r['N']))},{int(float(r['D']))},{float(r['loss']):.4f}")
    laws = json.loads((a.run / "laws.json").read_text())
    deg, plan = laws["degeneracy"], json.loads((a.run / "plan.json").read_text())
    print(json.dumps({"search": json.loads((a.run / "search.json").read_text())["best_params"],
                      "params": laws["parametric"]["params"], "remedy": deg["remedy"],
                      "problems": [p["code"] for p in deg["problems"]],
                      "problems_after": [p["code"] for p in deg.get("problems_after", [])],
                      "backtest_error": laws["backtest"].get("mean_abs_error"),
                      "extrapolation": {k: laws.get("extrapolation", {}).get(k) for k in (
                          "mean_error", "rms_log_error", "factor")},
                      "lr_law": {k: (laws["hyperparameters"].get("lr") or {}).get(k) for k in (
                          "scale", "k", "p", "optima", "intervals")}
                      if laws["hyperparameters"].get("lr") else laws["hyperparameters"],
                      "lr": plan["train"]["lr"],
                      "lr_source": plan["hyperparameters"]["lr_source"],
                      "interval": plan["predicted"]["loss"],
                      "size_source": plan["allocation"].get("size_source"),
                      "planned_N": plan["predicted"]["N"], "planned_D": plan["predicted"]["D"]},
                     indent=1))


if __name__ == "__main__":
    main()

"""A finished ``lmalloc run`` judged again with the current fit and interval code.

For each run folder: a copy (without its trainings) gets the fit stage rerun with the current
code, then the plan for the same FLOPs (a FLOP budget's, or the FLOPs a time budget's plan
gave its final run; ``plan_at`` of
``bench/isoflop_verify.py``). Printed: whether the allocation is the same, the interval it
planned with and the one the current code gives, the run's achieved own-validation loss and
whether it falls inside each. The run itself is not touched.

    .venv/bin/python bench/replan_run.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from isoflop_verify import plan_at


def replan(run: Path, scratch: Path) -> dict[str, Any]:
    from lmalloc.run import stages
    from lmalloc.run.context import RunContext, RunOptions

    old = json.loads((run / "plan.json").read_text())
    # a FLOP budget is planned again as such; a time budget at the FLOPs it planned
    flops = (old["budget"]["amount"] if old["budget"]["unit"] == "flops"
             else old["predicted"]["flops"])
    copy = scratch / f"{len(list(scratch.iterdir()))}-{run.name}"  # runs may share a name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("final", "trials", "ladder"))
    opts = json.loads((copy / "manifest.json").read_text())["run_options"]
    fields = set(RunOptions.__dataclass_fields__) - {"recipe"}
    ctx = RunContext(copy, RunOptions(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in opts.items() if k in fields}),
                     say=lambda *_: None)
    stages.fit(ctx)
    new = plan_at(ctx, flops)
    got = json.loads((run / "summary.json").read_text())["achieved"]["val_loss"]
    a, b = old["predicted"]["loss"], new["predicted"]["loss"]
    return {"run": str(run), "achieved": got,
            "same_allocation": (new["predicted"]["N"], new["predicted"]["D"])
            == (old["predicted"]["N"], old["predicted"]["D"]),
            "planned": [a["low"], a["value"], a["high"]],
            "now": [b["low"], b["value"], b["high"]],
            "inside_planned": a["low"] <= got <= a["high"],
            "inside_now": b["low"] <= got <= b["high"],
            "parts": (new["predicted"].get("interval") or {}).get("parts")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for run in a.runs:
            r = replan(run, Path(scratch))
            lo, v, hi = r["now"]
            print(f"{run}: achieved {r['achieved']:.3f}; planned {r['planned'][1]:.3f} "
                  f"[{r['planned'][0]:.3f}, {r['planned'][2]:.3f}] inside {r['inside_planned']};"
                  f" now {v:.3f} [{lo:.3f}, {hi:.3f}] inside {r['inside_now']}; same "
                  f"allocation {r['same_allocation']}; parts " + ", ".join(
                      f"{k} -{p['below']:.3f}/+{p['above']:.3f}"
                      for k, p in (r["parts"] or {}).items()))


if __name__ == "__main__":
    main()

"""Does the searched learning rate transfer to the ladder's largest size? Re-tune it there.

Takes a run whose exploration is done (``lmalloc run``, ``bench/ladder_probe.py`` or
``bench/isoflop_verify.py``) and trains the ladder's **largest** size as the ladder trains its
longest branch (same shape, tokens, WSD schedule, cooldown, warmup, μP/CompleteP bases; one
run from scratch instead of a branch off the stable run), at the transferred learning rate
(the search's, carried by the parameterization) times each of ``--factors``. Reports each
loss, the re-tuned optimum (the vertex of a parabola in ln lr through the three lowest, or the
best measured) and **Δloss = loss(transferred) − loss(best re-tuned)**: what the transfer
costs at the top of the ladder (issue 18, item 1).

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/lr_transfer.py \\
        runs/isoflop_verify/wikitext2_s0/run

Resumable: each training goes into ``<run>/lr_transfer/<factor>`` and is skipped when done;
the table is written to ``<run>/lr_transfer/result.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def main() -> None:
    import numpy as np

    from lmalloc.model.config import GPTConfig
    from lmalloc.plan.ladder import Ladder
    from lmalloc.plan.recipe import Recipe, SearchResult
    from lmalloc.rundir import RunDir, atomic_write_json, read_json
    from lmalloc.train.trainer import Trainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--factors", default="0.25,0.5,1,2,4")
    a = ap.parse_args()
    run = RunDir(a.run)
    opts = run.manifest()["run_options"]
    recipe = Recipe(**opts["recipe"])
    found = SearchResult.load(run.path("search.json"), recipe)
    top = max(Ladder.from_dict(read_json(run.path("ladder.json"), "ladder")).runs,
              key=lambda r: r.N)
    branch = max(top.branches, key=lambda b: b.tokens)
    model = {**top.model, "mup_base_width": found.base_width,
             "mup_base_depth": found.base_depth}
    rows: list[dict[str, Any]] = []
    for f in (float(x) for x in a.factors.split(",")):
        out = run.path(f"lr_transfer/{f:g}")
        done = out / "point.json"
        if not done.exists():
            train = recipe.train_config(lr=found.lr * f, warmup=found.warmup,
                                        max_tokens=branch.tokens,
                                        cooldown_frac=branch.cooldown_tokens / branch.tokens,
                                        eval_every=0)
            res = Trainer(GPTConfig.from_dict(model), train, run.data, out,
                          resume=True).fit().to_dict()
            atomic_write_json(done, {"factor": f, "lr": found.lr * f, "loss": res["val_loss"],
                                     "tokens": res["tokens"], "status": res["status"]})
        rows.append(read_json(done, "point"))
        print(f"lr x{f:g} = {rows[-1]['lr']:.4g}: loss {rows[-1]['loss']:.4f}", flush=True)
    rows.sort(key=lambda r: r["lr"])
    x = np.log([r["lr"] for r in rows])
    y = np.array([r["loss"] for r in rows])
    i = int(np.argmin(y))
    best_lr, best_loss, how = rows[i]["lr"], float(y[i]), "best measured"
    if 0 < i < len(rows) - 1:
        c2, c1, c0 = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
        if c2 > 0:
            xv = -c1 / (2 * c2)
            best_lr, best_loss, how = math.exp(xv), float(c0 + c1 * xv + c2 * xv * xv), "parabola"
    at = next(r for r in rows if r["factor"] == 1.0)["loss"] if any(
        r["factor"] == 1.0 for r in rows) else float("nan")
    result = {"run": str(a.run), "N": top.N, "shape": [top.model["n_layer"],
                                                        top.model["d_model"]],
              "tokens": branch.tokens, "transferred_lr": found.lr,
              "base": [found.base_width, found.base_depth], "points": rows,
              "retuned_lr": best_lr, "retuned_loss": best_loss, "optimum_from": how,
              "delta_loss": at - best_loss}
    atomic_write_json(run.path("lr_transfer/result.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=1))


if __name__ == "__main__":
    main()

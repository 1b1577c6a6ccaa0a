"""Is the plan right? The run's own law, checked at 10x its ladder's largest compute.

One *cell* = one corpus × one seed:

1. **Explore.** ``lmalloc run``'s stages prepare → split → search → ladder → fit on the
   corpus under a FLOP budget (``--budget``, default ``1e14flops``: the same design and the
   same trainings on any machine, however loaded).
2. **Plan at C_v.** ``C_v = 10 ×`` the compute of the ladder's largest training (its largest
   ``C`` row); :func:`~lmalloc.plan.planner.make_plan` allocates ``C_v`` FLOPs with the fitted
   law and the run's hyperparameters (lr, warmup, μP/CompleteP bases): N*, D*, the predicted
   loss and its interval (law bootstrap, seed noise, hyperparameter noise).
3. **Measure the IsoFLOP curve at C_v.** ``--sizes`` (default 5) model sizes spaced half an
   octave apart in non-embedding N and centred on N*, each a
   :func:`~lmalloc.model.shape.shape_for` shape trained on ``C_v`` FLOPs with the plan's
   recipe (schedule, batch, lr, warmup, parameterization). The measured IsoFLOP minimum is the
   vertex of a parabola in ``ln N`` through the measured losses (the lowest measured loss when
   the parabola does not open upwards or its vertex lies outside the measured sizes).

Reported per cell: planned N over the measured best N; the loss at the planned N over the
measured minimum loss; predicted over achieved loss at the planned N; whether the achieved loss
fell inside the plan's interval; and the fit's degeneracy diagnosis. Targets (issue 18): loss
at the planned N within 0.5 % of the IsoFLOP minimum, predicted within 1 % of achieved, the
interval covering every cell.

Every training goes into ``<work>/<corpus>_s<seed>/`` and is resumable (a finished one is
skipped); two processes may run different cells at once. One thread per process is enough:
FLOP budgets make the results independent of wall time.

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/isoflop_verify.py \\
        --corpus wikitext2 --seeds 0,1,2
    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/isoflop_verify.py \\
        --corpus shakespeare --seeds 0
    .venv/bin/python bench/isoflop_verify.py --summary
    .venv/bin/python bench/isoflop_verify.py --replan      # refit + replan finished cells

``--replan`` reruns the fit stage of every finished cell with the current code and re-plans at
its C_v, without training: the interval and prediction of a changed fit or interval rule,
judged on the trainings already measured (the first plan is kept as ``first_plan``; a replan
whose shape was not measured is reported and left out).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPORA = {"wikitext2": SHARED / "wikitext-2" / "train.txt",
           "shakespeare": SHARED / "tinyshakespeare" / "input.txt"}
RESULTS = REPO / "bench" / "results" / "isoflop_verify.json"
WORK = REPO / "runs" / "isoflop_verify"


def explore(run: Path, corpus: Path, budget: str, seed: int) -> Any:
    """``lmalloc run``'s stages up to the fit (resumable); returns the run context."""
    from lmalloc.run.context import RunContext, RunOptions
    from lmalloc.run.pipeline import run_pipeline

    opts = RunOptions(data=(str(corpus),), budget=budget, seed=seed)
    run_pipeline(run, opts, say=print, until="plan")
    return RunContext(run, opts, say=print)


def plan_at(ctx: Any, flops: float) -> dict[str, Any]:
    """The run's plan for ``flops`` FLOPs of final training (what ``lmalloc run`` would plan
    with that final share)."""
    from lmalloc.data.shards import TokenData
    from lmalloc.plan.planner import make_plan
    from lmalloc.scaling import load_laws
    from lmalloc.scaling.degeneracy import size_rule
    from lmalloc.scaling.hyperparams import HyperparameterLaws

    laws = load_laws(ctx.run.path("laws.json"))
    hp = laws.get("hyperparameters")
    found = ctx.search
    return make_plan(
        laws["parametric"], amount=flops, unit="flops", hardware=ctx.hardware,
        vocab_size=ctx.vocab, recipe=ctx.recipe, lr=found.lr, warmup=found.warmup,
        mup_base_width=found.base_width, mup_base_depth=found.base_depth,
        tokens_per_byte=ctx.tokens_per_byte,
        unique_tokens=float(TokenData(ctx.run.data).split("train").num_tokens),
        seed_sd=(laws.get("seed_noise") or {}).get("sd"), extrapolation=laws.get("extrapolation"),
        hp_laws=hp if isinstance(hp, HyperparameterLaws) else None, size_rule=size_rule(laws))


def train_size(root: Path, ctx: Any, plan: dict[str, Any], n: float, flops: float,
               tag: str = "") -> dict[str, Any]:
    """One IsoFLOP point: the shape nearest ``n`` non-embedding parameters on ``flops``
    (trained in ``root/<layers>x<width><tag>``, so a shape is trained once per cell)."""
    from lmalloc.model.accounting import param_count, train_flops_per_token
    from lmalloc.model.shape import shape_for
    from lmalloc.rundir import atomic_write_json
    from lmalloc.train.config import TrainConfig
    from lmalloc.train.trainer import Trainer

    base = plan["model"]
    cfg = shape_for(n, ctx.vocab, ctx.recipe.seq_len, mup_base_width=base["mup_base_width"],
                    mup_base_depth=base["mup_base_depth"])
    out = root / f"{cfg.n_layer}x{cfg.d_model}{tag}"
    done = out / "point.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    batch = ctx.recipe.batch_tokens
    tokens = max(1, round(flops / train_flops_per_token(cfg) / batch)) * batch
    steps = tokens // batch
    train = TrainConfig.from_dict({**plan["train"], "max_tokens": tokens, "max_seconds": None,
                                   "eval_every": max(1, steps // 4),
                                   "checkpoint_every": max(1, steps // 10)})
    res = Trainer(cfg, train, ctx.run.data, out, resume=True).fit().to_dict()
    point = {"N": param_count(cfg, non_embedding=True), "D": res["tokens"],
             "C": res["flops"], "loss": res["val_loss"], "bpb": res["val_bpb"],
             "shape": [cfg.n_layer, cfg.d_model], "status": res["status"]}
    atomic_write_json(done, point)
    return point


def isoflop_minimum(N: list[float], loss: list[float]) -> tuple[float, float, str]:
    """``(N_best, L_min, method)``: the vertex of the parabola in ln N through the lowest
    measured point and its two neighbours (the curve is asymmetric: steeper above the
    optimum, where each size gets fewer tokens, so a parabola through all points misplaces
    it), or the lowest point itself when it is at an end."""
    import numpy as np

    order = np.argsort(N)
    x, y = np.log(np.asarray(N, dtype=float)[order]), np.asarray(loss, dtype=float)[order]
    i = int(np.argmin(y))
    if 0 < i < len(x) - 1:
        a, b, c = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
        if a > 0:
            xv = -b / (2 * a)
            return float(math.exp(xv)), float(a * xv * xv + b * xv + c), "parabola"
    return float(math.exp(x[i])), float(y[i]), "lowest point"


def cell(corpus: str, seed: int, budget: str, sizes: int, factor: float, work: Path,
         ) -> dict[str, Any]:
    from lmalloc.scaling import load_laws

    root = work / f"{corpus}_s{seed}"
    ctx = explore(root / "run", CORPORA[corpus], budget, seed)
    ladder = list(csv.DictReader(open(ctx.run.path("ladder.csv"))))
    c_top = max(float(r["C"]) for r in ladder if r["status"] == "completed")
    c_v = factor * c_top
    plan = plan_at(ctx, c_v)
    n_star = float(plan["predicted"]["N"])
    offsets = [k / 2 - (sizes - 1) / 4 for k in range(sizes)]  # half octaves around N*
    points = []
    for off in offsets:
        p = train_size(root, ctx, plan, n_star * 2.0 ** off, c_v)
        print(f"{corpus} s{seed}: N={p['N']} shape={p['shape']} D={p['D']} "
              f"loss={p['loss']:.4f}", flush=True)
        points.append(p)
    pred = plan["predicted"]["loss"]
    laws = load_laws(ctx.run.path("laws.json"))
    deg = laws["degeneracy"]
    lr_check = None
    if plan["hyperparameters"]["lr"] != ctx.search.lr:  # the lr law moved it: was that right?
        alt = {**plan, "train": {**plan["train"], "lr": ctx.search.lr}}
        q = train_size(root, ctx, alt, n_star, c_v, tag="_search_lr")
        at = min(points, key=lambda p: abs(math.log(p["N"] / n_star)))
        lr_check = {"law_lr": plan["hyperparameters"]["lr"], "search_lr": ctx.search.lr,
                    "loss_law_lr": at["loss"], "loss_search_lr": q["loss"]}
        print(f"{corpus} s{seed}: lr law {lr_check['law_lr']:.3g} -> {at['loss']:.4f}, "
              f"searched lr {ctx.search.lr:.3g} -> {q['loss']:.4f}", flush=True)
    return judged({
        "corpus": corpus, "seed": seed, "budget": budget, "c_top": c_top, "c_v": c_v,
        "planned_N": n_star, "planned_D": plan["predicted"]["D"],
        "law": laws["parametric"].params, "remedy": deg["remedy"],
        "problems": [p["code"] for p in deg["problems"]],
        "problems_after": [p["code"] for p in deg.get("problems_after", [])],
        "size_source": plan["allocation"]["size_source"],
        "lr": plan["hyperparameters"]["lr"], "lr_source": plan["hyperparameters"]["lr_source"],
        "lr_check": lr_check, "hp_law": _hp_summary(laws.get("hyperparameters")),
        "points": points,
        "predicted": pred["value"], "interval": [pred["low"], pred["high"]],
    })


def _hp_summary(hp: Any) -> dict[str, Any] | None:
    """The lr law of laws.json in a line: scale, k, p with its interval, per-scale optima."""
    if isinstance(hp, dict):  # laws.json says why there is none
        return {"available": False, "reason": hp.get("reason")}
    if hp is None or hp.lr is None:
        return None
    p = hp.lr.estimates()["p"]
    return {"scale": hp.scale, "k": hp.lr.k, "p": hp.lr.p, "p_interval": [p.low, p.high],
            "optima": [list(o) for o in hp.lr.optima]}


def judged(c: dict[str, Any]) -> dict[str, Any]:
    """A cell's verdicts from its points: the IsoFLOP minimum (:func:`isoflop_minimum`, and
    the lowest measured point), the loss at the planned N over each, predicted over achieved,
    and the interval's coverage."""
    points, n_star = c["points"], c["planned_N"]
    n_best, l_min, how = isoflop_minimum([p["N"] for p in points], [p["loss"] for p in points])
    low = min(points, key=lambda p: p["loss"])
    at_plan = min(points, key=lambda p: abs(math.log(p["N"] / n_star)))
    lo, hi = c["interval"]
    return {**c, "measured_best_N": n_best, "measured_min_loss": l_min, "minimum_from": how,
            "lowest_point": {"N": low["N"], "shape": low["shape"], "loss": low["loss"]},
            "N_ratio": n_star / n_best, "loss_at_plan": at_plan["loss"],
            "loss_ratio": at_plan["loss"] / l_min,
            "loss_ratio_lowest": at_plan["loss"] / low["loss"],
            "pred_over_achieved": c["predicted"] / at_plan["loss"],
            "inside": lo <= at_plan["loss"] <= hi}


def replan(path: Path) -> None:
    """Refit a finished cell's ladder with the current fit stage, re-plan at its C_v and, when
    the planned shape was measured, judge the new plan on it (cell.json rewritten)."""
    from lmalloc.model.shape import shape_for
    from lmalloc.run import stages
    from lmalloc.rundir import atomic_write_json

    c = json.loads(path.read_text())
    ctx = explore(path.parent / "run", CORPORA[c["corpus"]], c["budget"], c["seed"])
    stages.fit(ctx)
    plan = plan_at(ctx, c["c_v"])
    cfg = shape_for(plan["predicted"]["N"], ctx.vocab, ctx.recipe.seq_len)
    shape = [cfg.n_layer, cfg.d_model]
    if shape not in [p["shape"] for p in c["points"]]:
        print(f"{path.parent.name}: the replan's shape {shape} was not measured; cell kept")
        return
    from lmalloc.scaling import load_laws

    pred, laws = plan["predicted"]["loss"], load_laws(ctx.run.path("laws.json"))
    kept = ("planned_N", "planned_D", "predicted", "interval", "size_source", "lr", "law",
            "remedy")
    first = c.get("first_plan") or {k: c.get(k) for k in kept}
    atomic_write_json(path, {
        **c, "first_plan": first, "planned_N": plan["predicted"]["N"],
        "planned_D": plan["predicted"]["D"], "predicted": pred["value"],
        "interval": [pred["low"], pred["high"]], "size_source": plan["allocation"]["size_source"],
        "lr": plan["hyperparameters"]["lr"], "law": laws["parametric"].params,
        "remedy": laws["degeneracy"]["remedy"],
        "interval_parts": (plan["predicted"].get("interval") or {}).get("parts")})


def summary(work: Path) -> list[dict[str, Any]]:
    cells = [judged(json.loads(p.read_text())) for p in sorted(work.glob("*/cell.json"))]
    print(f"{'cell':<16}{'planned N':>11}{'best N':>10}{'N ratio':>9}{'L(plan)/Lmin':>14}"
          f"{'/lowest':>9}{'pred/ach':>10}{'inside':>8}  size from")
    for c in cells:
        src = (c.get("size_source") or {}).get("source", "law (before size_source)")
        print(f"{c['corpus'] + '_s' + str(c['seed']):<16}{c['planned_N']:>11.4g}"
              f"{c['measured_best_N']:>10.4g}{c['N_ratio']:>9.3f}{c['loss_ratio']:>14.4f}"
              f"{c['loss_ratio_lowest']:>9.4f}{c['pred_over_achieved']:>10.4f}"
              f"{str(c['inside']):>8}  {src}")
        print("    " + ", ".join(f"{p['shape'][0]}x{p['shape'][1]} ({p['N']:,}): "
                                 f"{p['loss']:.4f}" for p in c["points"]))
        if c.get("lr_check"):
            k = c["lr_check"]
            print(f"    lr law {k['law_lr']:.3g}: {k['loss_law_lr']:.4f}; searched lr "
                  f"{k['search_lr']:.3g}: {k['loss_search_lr']:.4f}")
        lo, hi = c["interval"]
        print(f"    predicted {c['predicted']:.3f} [{lo:.3f}, {hi:.3f}], achieved "
              f"{c['loss_at_plan']:.3f}" + "".join(
                  f"; {k} -{v['below']:.3f}/+{v['above']:.3f}"
                  for k, v in (c.get("interval_parts") or {}).items()))
    return cells


def main() -> None:
    from lmalloc.rundir import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="wikitext2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", default="1e14flops")
    ap.add_argument("--sizes", type=int, default=5)
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--replan", action="store_true")
    a = ap.parse_args()
    if a.replan:
        for path in sorted(a.work.glob("*/cell.json")):
            replan(path)
    elif not a.summary:
        if not CORPORA[a.corpus].exists():
            raise SystemExit(f"{CORPORA[a.corpus]} not found (set LMALLOC_SHARED_DATA)")
        for seed in (int(s) for s in a.seeds.split(",")):
            out = a.work / f"{a.corpus}_s{seed}" / "cell.json"
            if not out.exists():
                atomic_write_json(out, cell(a.corpus, seed, a.budget, a.sizes, a.factor,
                                            a.work))
    cells = summary(a.work)
    if cells and a.work == WORK:
        atomic_write_json(RESULTS, {"cells": cells, "command": "bench/isoflop_verify.py"})


if __name__ == "__main__":
    main()

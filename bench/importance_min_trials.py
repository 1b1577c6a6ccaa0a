"""How many completed trials hyperparameter importances need before they mean anything.

The report draws Optuna's fANOVA importances of the search's hyperparameters only from
:data:`lmalloc.report.verdicts.MIN_IMPORTANCE_TRIALS` completed trials or more. This measures
what a chart from fewer would show, on a synthetic objective shaped like the run's search (the
learning rate, log-uniform 1e-4..1e-1, and the warmup fraction, 0..0.2, as in
``lmalloc.run.explore``; a bowl in log lr plus a smaller warmup term and seed noise of 0.01):
for each number k of completed trials, ``--reps`` studies of k random trials (Optuna's
RandomSampler; TPE would cluster them, which only makes few trials less informative), the
importance of lr by fANOVA (seed 0, as the report's), against the importance from 400 trials.

Synthetic: it says how noisy the estimate is, not what the real search's importances are.

Usage::

    python bench/importance_min_trials.py --reps 30
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import optuna
from optuna.importance import FanovaImportanceEvaluator


def objective(lr: float, warmup: float, rng: np.random.Generator) -> float:
    """A validation bpb-like bowl: lr matters most, warmup some, plus seed noise."""
    return (2.8 + 0.15 * (math.log10(lr) + 2.5) ** 2 + 4.0 * (warmup - 0.05) ** 2
            + float(rng.normal(0.0, 0.01)))


def lr_importance(k: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(k):
        t = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                       "warmup": optuna.distributions.FloatDistribution(0.0, 0.2)})
        study.tell(t, objective(t.params["lr"], t.params["warmup"], rng))
    imp = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0))
    return float(imp["lr"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 5, 10, 20, 40])
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    truth = float(np.median([lr_importance(400, 10_000 + s) for s in range(3)]))
    print(json.dumps({"k": 400, "lr_importance": round(truth, 3)}))
    for k in args.ks:
        vals = np.array([lr_importance(k, 1000 * k + r) for r in range(args.reps)])
        err = np.abs(vals - truth)
        print(json.dumps({
            "k": k, "reps": args.reps, "median": round(float(np.median(vals)), 3),
            "p10": round(float(np.percentile(vals, 10)), 3),
            "p90": round(float(np.percentile(vals, 90)), 3),
            "median_abs_error": round(float(np.median(err)), 3),
            "share_within_0.1": round(float(np.mean(err <= 0.1)), 2),
            "share_lr_ranked_first": round(float(np.mean(vals > 0.5)), 2)}))
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()

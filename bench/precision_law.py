"""The precision law on models trained here: fitted on a run's ladder, checked on its final model.

For each finished ``lmalloc run`` directory: every completed ladder checkpoint is quantized
uniformly (round-to-nearest, groups of 64) to 8, 4, 3 and 2 bits and evaluated on the same
validation tokens; the law δ(N, D, b) = C·D^γD/N^γN·e^(−b/γb) is fitted to those increases
(:func:`lmalloc.scaling.precision.fit_precision_law`), then the final model — larger D than
any ladder point, never seen by the fit — is measured the same way and compared with the
law's prediction and 90 % interval. This is what ``lmalloc run --deploy-memory`` relies on.

    nice env OMP_NUM_THREADS=1 .venv/bin/python bench/precision_law.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmalloc.run.explore import read_ladder
from lmalloc.run.precision import BITS, measure_degradation, model_degradation
from lmalloc.rundir import RunDir, atomic_write_json, read_json
from lmalloc.scaling.precision import fit_precision_law

RESULTS = Path(__file__).resolve().parent / "results" / "precision_law.json"


def one_run(root: Path, eval_tokens: int) -> dict:
    from lmalloc.data.shards import TokenData

    run = RunDir(root)
    t0 = time.perf_counter()
    measured = measure_degradation(run, read_ladder(run), eval_tokens=eval_tokens)
    law = fit_precision_law([m["N"] for m in measured], [m["D"] for m in measured],
                            [m["bits"] for m in measured], [m["delta"] for m in measured])
    plan = read_json(run.path("plan.json"))["predicted"]
    val = TokenData(run.data).split("val")
    base, deltas = model_degradation(str(run.final), val, BITS, eval_tokens)
    final = []
    for b, d in deltas.items():
        est = law.predict(plan["N"], plan["D"], b)
        final.append({"bits": b, "measured": d, "predicted": est.to_dict(),
                      "inside": est.contains(d)})
    law_doc = {k: v for k, v in law.to_dict().items() if k != "boot"}
    return {"run": str(root), "law": law_doc, "ladder": measured, "final_N": plan["N"],
            "final_D": plan["D"], "final_loss": base, "final": final,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    results = []
    for root in a.runs:
        r = one_run(root, a.eval_tokens)
        results.append(r)
        law = r["law"]
        print(f"{root}: γD {law['gamma_d']:.2f} γN {law['gamma_n']:.2f} γb {law['gamma_b']:.2f}"
              f" ({law['points']} points above the floor)")
        for f in r["final"]:
            e = f["predicted"]
            print(f"  final int{f['bits']}: measured {f['measured']:+.4f} predicted "
                  f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}] "
                  f"{'inside' if f['inside'] else 'OUTSIDE'}")
    atomic_write_json(a.out, {"date": time.strftime("%Y-%m-%d"), "eval_tokens": a.eval_tokens,
                              "runs": results})


if __name__ == "__main__":
    main()

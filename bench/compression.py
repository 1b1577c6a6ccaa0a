"""Compression of one trained run: uniform formats versus the MILP allocation at equal bytes.

For ``RUN/final``: validation bits per byte and true size (``lmalloc.compress.size_bytes``)
with every linear layer in one format (fp32, int8/4/3/2, group sizes, sym./asym.), then
``compress_run`` (per-layer sensitivities calibrated on the train split, MILP and greedy) at
budgets from the smallest model to fp32, each allocation evaluated on the same val tokens.
The peer is uniform int4 at the same bytes (the issue's comparison).

    OMP_NUM_THREADS=2 .venv/bin/python bench/compression.py --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "compression.json"
UNIFORM = ("int8g64a", "int4g32a", "int4g64a", "int4g128a", "int4g64s", "int3g64a", "int2g64a")


def main() -> None:
    from lmalloc.compress.allocate import solve_greedy, solve_milp
    from lmalloc.compress.quantize import quantizable_layers, quantize_model, size_bytes
    from lmalloc.compress.stage import build_problem, compress_run
    from lmalloc.data.shards import TokenData
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.io import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--eval-tokens", type=int, default=32768)
    p.add_argument("--calib-tokens", type=int, default=8192)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    model, cfg = load_model(a.run / "final")
    val = TokenData(a.run / "data").split("val")

    def bpb(m: Any) -> float:
        return float(evaluate_lm(m, val, seq_len=cfg.seq_len, batch_size=8,
                                 max_tokens=a.eval_tokens)["bpb"])

    layers = list(quantizable_layers(model))
    base = bpb(model)
    rows = [{"format": "fp32", "bytes": size_bytes(model), "bpb": base, "delta": 0.0}]
    for f in UNIFORM:
        q = quantize_model(model, {n: f for n in layers})
        b = bpb(q)
        rows.append({"format": f, "bytes": size_bytes(q), "bpb": b, "delta": b - base})
        print(json.dumps(rows[-1]))
    t0 = time.perf_counter()
    res = compress_run(a.run, 10**12, (8, 4, 3, 2), 64, calib_tokens=a.calib_tokens,
                       eval_tokens=a.eval_tokens)
    seconds = time.perf_counter() - t0
    s = res["sensitivity"]
    import numpy as np

    problem = build_problem(model, s["formats"], np.maximum(np.array(s["measured"]), 0.0))
    int4 = next(r["bytes"] for r in rows if r["format"] == "int4g64a")
    allocs = []
    for budget in (problem.min_bytes() + 2000, int4, (int4 + rows[0]["bytes"]) // 2):
        for name, solver in (("milp", solve_milp), ("greedy", solve_greedy)):
            t = time.perf_counter()
            choice = solver(problem, budget)
            solve = time.perf_counter() - t
            pred, used = problem.total(choice)
            b = bpb(quantize_model(model, problem.as_formats(choice)))
            allocs.append({"budget": int(budget), "solver": name, "bytes": int(used),
                           "predicted_increase": pred, "bpb": b, "delta": b - base,
                           "solve_ms": 1e3 * solve})
            print(json.dumps(allocs[-1]))
    doc = {"benchmark": "compression", "run": str(a.run), "eval_tokens": a.eval_tokens,
           "calib_tokens": a.calib_tokens, "uniform": rows, "allocations": allocs,
           "proxy_spearman": res["proxy_spearman"], "compress_run_seconds": seconds}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2))
    print(f"proxy spearman {res['proxy_spearman']:.3f}; compress_run {seconds:.1f} s; "
          f"wrote {a.out}")


if __name__ == "__main__":
    main()

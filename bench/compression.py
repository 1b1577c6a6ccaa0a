"""Compression of one trained run: uniform formats versus the allocator at equal bytes.

For ``RUN/final``: validation bits per byte and true size (``lmalloc.compress.size_bytes``)
with every linear layer in one format — (a) int8, (b) int4 round-to-nearest (the peer),
(c) int4 GPTQ, and more — then ``compress_run`` (per-layer KL sensitivities on train-split
calibration tokens, measured with the method it then uses; MILP) at the bytes of (b): (d) with
GPTQ, and the same with RTN. Everything is evaluated on the same validation tokens (all of
them by default). Last, the allocator's solve time (MILP vs greedy) on a synthetic
sensitivity table with a few hundred layers.

    OMP_NUM_THREADS=2 .venv/bin/python bench/compression.py --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "compression.json"
KL_TOKENS = 16384  # val tokens for the KL column (a low-noise second measure of the damage)
_VAL_KL: dict[str, Any] = {}


def val_kl(run: Path, model: Any) -> float:
    """KL(original ‖ model) per token on the first KL_TOKENS val tokens: Δbpb on one val
    split carries sampling noise of ~1e-3 here (a quantized model can even score better), the
    KL of the same predictions does not."""
    import torch

    from lmalloc.compress.allocate import KLDivergence
    from lmalloc.data.shards import TokenData
    from lmalloc.model.io import load_model

    if "fn" not in _VAL_KL:
        ref, cfg = load_model(run / "final")
        val = TokenData(run / "data").split("val")
        xs = [torch.from_numpy(x) for x, _ in
              val.sequential_batches(8, cfg.seq_len, max_tokens=KL_TOKENS)]
        _VAL_KL["fn"] = KLDivergence(ref, xs)
    return float(_VAL_KL["fn"](model))
UNIFORM = ("int8g64a", "int4g64a", "int4g32a", "int4g128a", "int4g64s", "int3g64a",
           "int2g64a")


def uniform_rows(run: Path, calib_tokens: int, eval_tokens: int | None) -> list[dict[str, Any]]:
    """fp32, then each uniform format with RTN and (int8/int4/int3 g64) GPTQ."""
    from lmalloc.compress.gptq import gptq_quantize_model
    from lmalloc.compress.quantize import quantizable_layers, quantize_model, size_bytes
    from lmalloc.compress.stage import Calibration
    from lmalloc.data.shards import TokenData
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.io import load_model

    model, cfg = load_model(run / "final")
    data = TokenData(run / "data")
    calib = Calibration.from_split(data.split("train"), calib_tokens, cfg.seq_len)

    def bpb(m: Any) -> float:
        return float(evaluate_lm(m, data.split("val"), seq_len=cfg.seq_len, batch_size=8,
                                 max_tokens=eval_tokens)["bpb"])

    base = bpb(model)
    rows = [{"format": "fp32", "method": "-", "bytes": size_bytes(model), "bpb": base,
             "delta": 0.0}]
    for f in (*UNIFORM, "int4g64a+head"):
        formats = {n: f.split("+")[0] for n in quantizable_layers(model, tied="+" in f)}
        for method in ("rtn", "gptq"):
            if method == "gptq" and f not in ("int8g64a", "int4g64a", "int3g64a",
                                              "int4g64a+head"):
                continue
            t = time.perf_counter()
            q = (quantize_model(model, formats) if method == "rtn"
                 else gptq_quantize_model(model, formats, calib.fit))
            b = bpb(q)
            rows.append({"format": f, "method": method, "bytes": size_bytes(q), "bpb": b,
                         "val_kl": val_kl(run, q),
                         "delta": b - base, "seconds": time.perf_counter() - t})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def solve_times(n_layers: int = 384, seed: int = 0) -> list[dict[str, Any]]:
    """MILP vs greedy on a synthetic table: 11 formats (fp32; int8/4/3/2 at group sizes
    32/64/128), layer sizes of a mid-size GPT, costs ∝ 4^-bits × a per-layer scale."""
    from lmalloc.compress.allocate import Problem, solve_greedy, solve_milp

    rng = np.random.default_rng(seed)
    bits = np.array([32, 8, 8, 4, 4, 4, 3, 3, 3, 2, 2])
    group = np.array([0, 128, 64, 32, 64, 128, 32, 64, 128, 32, 64])
    overhead = np.where(group > 0, 24 / np.maximum(group, 1), 0)  # fp16 scale + u8 zero
    n = rng.choice([1024 * 1024, 1024 * 3072, 1024 * 4096, 4096 * 1024], n_layers)
    nbytes = np.ceil(n[:, None] * (bits + overhead)[None, :] / 8).astype(int)
    cost = rng.lognormal(-8, 1.5, n_layers)[:, None] * 4.0 ** (-(bits - 2))[None, :]
    cost = cost * (1 + 0.05 * overhead)[None, :]
    cost[:, 0] = 0.0
    p = Problem([f"l{i}" for i in range(n_layers)], [str(j) for j in range(11)], cost,
                nbytes, 0)
    out = []
    for frac in (0.13, 0.15, 0.2):
        budget = int(p.nbytes[:, 0].sum() * frac)
        row: dict[str, Any] = {"layers": n_layers, "formats": 11, "budget_fraction": frac}
        for name, solver in (("milp", solve_milp), ("greedy", solve_greedy)):
            t = time.perf_counter()
            cost_, used = p.total(solver(p, budget))
            row[name] = {"seconds": time.perf_counter() - t, "cost": cost_, "bytes": used}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def allocate_more(run: Path, res: dict[str, Any], settings: Any, budget: int,
                  base: float) -> dict[str, Any]:
    """Re-solve ``res``'s sensitivity table at another budget, quantize, evaluate."""
    from lmalloc.compress.allocate import KLDivergence
    from lmalloc.compress.quantize import size_bytes
    from lmalloc.compress.stage import Calibration, build_problem, choose_jointly
    from lmalloc.data.shards import TokenData
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.io import load_model

    model, cfg = load_model(run / "final")
    data = TokenData(run / "data")
    sens = res["sensitivity"]
    problem = build_problem(model, sens["formats"], np.maximum(np.array(sens["measured"]), 0),
                            settings.embedding)
    calib = Calibration.from_split(data.split("train"), settings.calib_tokens, cfg.seq_len)
    pick, q, candidates = choose_jointly(model, problem, budget, settings, calib, {},
                                         KLDivergence(model, calib.score))
    choice = candidates[pick]["choice"]
    b = float(evaluate_lm(q, data.split("val"), seq_len=cfg.seq_len, batch_size=8,
                          max_tokens=settings.eval_tokens)["bpb"])
    return {"budget": budget, "bytes": size_bytes(q), "bpb": b, "delta": b - base,
            "val_kl": val_kl(run, q),
            "predicted_increase": problem.total(choice)[0], "chosen_by": pick,
            "candidates": {k: {kk: vv for kk, vv in v.items() if kk != "choice"}
                           for k, v in candidates.items()},
            "formats": problem.as_formats(choice)}


def main() -> None:
    from lmalloc.compress.stage import CompressSettings, compress_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--eval-tokens", type=int, default=None, help="default: all val tokens")
    p.add_argument("--calib-tokens", type=int, default=8192)
    p.add_argument("--bits", default="8,4,3")
    p.add_argument("--group-sizes", default="32,64,128")
    p.add_argument("--methods", default="gptq", help="allocator methods, e.g. gptq,rtn")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    solve = solve_times()
    rows = uniform_rows(a.run, a.calib_tokens, a.eval_tokens)
    base = rows[0]["bpb"]
    b = next(r for r in rows if r["format"] == "int4g64a" and r["method"] == "rtn")
    b_all = next(r for r in rows if r["format"] == "int4g64a+head" and r["method"] == "rtn")
    allocs = []
    for method in a.methods.split(","):
        for embedding in (True, False):
            s = CompressSettings(bits=tuple(int(x) for x in a.bits.split(",")),
                                 group_sizes=tuple(int(g) for g in a.group_sizes.split(",")),
                                 method=method, calib_tokens=a.calib_tokens,
                                 eval_tokens=a.eval_tokens, embedding=embedding)
            t = time.perf_counter()
            res = compress_run(a.run, b["bytes"], s)
            from lmalloc.compress.store import load_quantized

            q, _ = load_quantized(a.run / "compressed" / "model.safetensors")
            row = {"method": method, "embedding_choice": embedding, "budget": b["bytes"],
                   "val_kl": val_kl(a.run, q),
                   "peer": "b", "bytes": res["size_bytes"], "bpb": res["bpb"],
                   "delta": res["bpb"] - base, "predicted_increase": res["predicted_increase"],
                   "greedy_predicted_increase": res["greedy_predicted_increase"],
                   "proxy_spearman": res["proxy_spearman"], "formats": res["formats"],
                   "chosen_by": res["chosen_by"], "candidates": res["candidates"],
                   "seconds": time.perf_counter() - t, "settings": s.to_dict()}
            allocs.append(row)
            print(json.dumps(row), flush=True)
            if embedding:
                more = allocate_more(a.run, res, s, b_all["bytes"], base)
                allocs.append({"method": method, "embedding_choice": True, "peer": "b_all",
                               **more})
                print(json.dumps(allocs[-1]), flush=True)
    verdict = {"b_int4_rtn": b["delta"], "b_all_int4_rtn_with_head": b_all["delta"],
               **{f"d_{r['method']}_{'emb' if r['embedding_choice'] else 'linear'}_at_"
                  f"{r['peer']}": r["delta"] for r in allocs}}
    verdict["d_linear_only_at_most_half_b"] = bool(
        next(r for r in allocs if not r["embedding_choice"])["delta"] <= 0.5 * b["delta"])
    doc = {"benchmark": "compression", "run": str(a.run), "eval_tokens": a.eval_tokens,
           "calib_tokens": a.calib_tokens, "uniform": rows, "allocations": allocs,
           "verdict": verdict, "solve_times": solve}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(verdict), f"wrote {a.out}")


if __name__ == "__main__":
    main()

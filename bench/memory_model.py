"""Validate the memory model on this CPU: predicted vs measured peak training memory.

How the peak is measured (and its limits). Each configuration runs in a FRESH subprocess
(one thread) that builds the model, the AdamW optimizer (``optim_groups``) and a batch, then
resets the kernel's resident-set high-water mark (after one step of a tiny model, so
one-time runtime set-up is not charged) (``echo 5 > /proc/self/clear_refs`` resets
``VmHWM``), runs two training steps (the first allocates the AdamW moments; the second is a
steady-state step with them alive) and reads ``VmHWM`` from ``/proc/self/status``. The
measured number is ``VmHWM − RSS before the steps``: everything a step adds on top of the
weights. Limits: RSS counts pages, not tensors, so allocator caching, fragmentation and
freed-but-unreturned heap pages count too; to make freed tensors leave RSS we set
``MALLOC_MMAP_THRESHOLD_=65536`` (glibc serves every allocation above 64 KiB with its own
mmap, returned on free). Pages of a fresh allocation count only once touched, as on a GPU
they would be reserved at once; both errors are small for tensors written in full.

The prediction compared is ``estimate_memory(...).peak − weights`` (the weights exist
before the reset). The peers predict the TOTAL (weights included) with no activations:
accelerate's ``estimate_training_usage`` (what ``accelerate estimate-memory`` prints for
"Training using Adam", peak = the largest of its phases) and DeepSpeed's ZeRO model-states
estimator ``estimate_zero2_model_states_mem_needs`` (1 GPU, no offload); they are compared
with the measured total ``weights + measured step memory``.

    .venv/bin/python bench/memory_model.py      # ~2 min on 2 cores

Writes ``bench/results/memory_model.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from lmalloc.cost.memory import estimate_memory
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig
from lmalloc.rundir import atomic_write_json

# (d_model, n_layer, n_head, vocab, micro_batch, seq_len, precision, attention, checkpointing)
CONFIGS: tuple[tuple[int, int, int, int, int, int, str, str, bool], ...] = (
    (256, 4, 4, 8192, 8, 256, "fp32", "sdpa", False),
    (512, 4, 8, 16384, 4, 256, "fp32", "sdpa", False),
    (384, 6, 6, 4096, 16, 128, "fp32", "sdpa", False),
    (256, 8, 4, 32000, 4, 512, "fp32", "sdpa", False),
    (512, 2, 8, 50304, 2, 512, "fp32", "sdpa", False),
    (768, 4, 12, 8192, 2, 1024, "fp32", "sdpa", False),
    (256, 4, 4, 4096, 4, 512, "fp32", "math", False),
    (384, 6, 6, 8192, 8, 256, "fp32", "sdpa", True),
    (384, 4, 6, 8192, 8, 256, "bf16", "sdpa", False),
    (256, 2, 4, 16384, 4, 256, "bf16", "sdpa", False),
    # small vocabularies, with and without checkpointing (issue 20): where the recomputed
    # block, not the loss, sets the checkpointed peak; they informed its working-set terms
    (128, 8, 4, 256, 8, 256, "fp32", "sdpa", False),
    (128, 8, 4, 256, 8, 256, "fp32", "sdpa", True),
    (256, 6, 4, 256, 4, 256, "fp32", "sdpa", False),
    (256, 6, 4, 256, 4, 256, "fp32", "sdpa", True),
    (192, 6, 3, 512, 8, 128, "fp32", "sdpa", False),
    (192, 6, 3, 512, 8, 128, "fp32", "sdpa", True),
    (384, 3, 6, 512, 4, 256, "fp32", "sdpa", False),
    (384, 3, 6, 512, 4, 256, "fp32", "sdpa", True),
)
SPEC_FIELDS = ("d_model", "n_layer", "n_head", "vocab", "micro_batch", "seq_len", "precision",
               "attention", "ckpt")
# Measured only after the formulas were settled (the first ten informed two of them: the
# 16·V bytes per token at the loss and one T×T matrix per head for math attention).
HOLDOUT: tuple[tuple[int, int, int, int, int, int, str, str, bool], ...] = (
    (320, 5, 5, 12000, 8, 256, "fp32", "sdpa", False),
    (640, 3, 10, 8192, 2, 512, "fp32", "sdpa", False),
    (256, 6, 4, 8192, 4, 256, "fp32", "math", False),
    (512, 6, 8, 16384, 8, 256, "fp32", "sdpa", True),
    (192, 2, 3, 4096, 4, 256, "bf16", "sdpa", False),
)


def _child(spec: dict[str, Any]) -> dict[str, float]:
    import torch

    from lmalloc.model.gpt import GPT

    torch.set_num_threads(1)
    torch.manual_seed(0)
    _warm_up_runtime(GPT)
    cfg = GPTConfig(vocab_size=spec["vocab"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                    d_model=spec["d_model"], seq_len=spec["seq_len"])
    model = GPT(cfg)
    model.activation_checkpointing = spec["ckpt"]  # what TrainConfig.activation_checkpointing sets
    opt = torch.optim.AdamW(model.optim_groups(lr=1e-4, weight_decay=0.1), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (spec["micro_batch"], spec["seq_len"]))
    y = torch.roll(x, -1, dims=1)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.MATH if spec["attention"] == "math" else SDPBackend.FLASH_ATTENTION
    bf16 = spec["precision"] == "bf16"
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(2):
        with sdpa_kernel(backend), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"base_rss": base, "peak_rss": _status("VmHWM"),
            "weights_bytes": float(sum(p.numel() * p.element_size()
                                       for p in model.parameters()))}


def _warm_up_runtime(gpt: Any) -> None:
    """One step of a tiny model first, so one-time runtime set-up (thread pools, kernel
    workspaces, autograd engine) is not charged to the measured configuration."""
    import torch

    tiny = gpt(GPTConfig(vocab_size=64, n_layer=1, n_head=2, d_model=32, seq_len=16))
    opt = torch.optim.AdamW(tiny.parameters())
    x = torch.randint(0, 64, (2, 16))
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = tiny(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    del tiny, opt


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _peers(N: int, precision: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {"accelerate": None, "deepspeed": None}
    try:
        from accelerate.commands.estimate import estimate_training_usage

        usage = estimate_training_usage(4 * N, "float32" if precision == "fp32" else "bfloat16")
        out["accelerate"] = float(max(usage.values()))
    except ImportError:
        pass
    try:
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs,
        )

        _, gpu = estimate_zero2_model_states_mem_needs(N, num_gpus_per_node=1, num_nodes=1,
                                                      cpu_offload=False)
        out["deepspeed"] = float(gpu)
    except Exception:  # noqa: BLE001 - DeepSpeed may fail to import on CPU; then no peer
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--out", default="bench/results/memory_model.json")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the measurements already in --out (predictions are redone)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    old: dict[str, dict[str, float]] = {}
    if args.reuse and os.path.exists(args.out):
        with open(args.out) as f:
            for r in json.load(f)["rows"]:
                key = json.dumps({k: r[k] for k in SPEC_FIELDS}, sort_keys=True)
                old[key] = {k: r[k] for k in ("base_rss", "peak_rss", "weights_bytes")}
    rows, t0 = [], time.time()
    jobs = [("holdout", c) for c in HOLDOUT] + [("calibration", c) for c in CONFIGS]
    for role, (d, L, h, V, B, T, prec, attn, ckpt) in jobs:
        spec = {"d_model": d, "n_layer": L, "n_head": h, "vocab": V, "micro_batch": B,
                "seq_len": T, "precision": prec, "attention": attn, "ckpt": ckpt}
        key = json.dumps(spec, sort_keys=True)
        if key in old:
            meas = old[key]
        else:
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                 capture_output=True, text=True, env=env, check=True)
            meas = json.loads(out.stdout.strip().splitlines()[-1])
        cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=h, d_model=d, seq_len=T)
        est = estimate_memory(cfg, B, T, prec, activation_checkpointing=ckpt, attention=attn,
                              device="cpu")
        measured_step = meas["peak_rss"] - meas["base_rss"]
        measured_total = meas["weights_bytes"] + measured_step
        N = param_count(cfg)
        peers = _peers(N, prec)
        row = {**spec, "key": key, "set": role, "params": N, **meas,
               "measured_step": measured_step, "measured_total": measured_total,
               "predicted_step": est.peak - est.weights,
               "predicted_total": est.peak, "estimate": est.to_dict(),
               "peer_accelerate_total": peers["accelerate"],
               "peer_deepspeed_total": peers["deepspeed"]}
        row["error"] = row["predicted_step"] / measured_step - 1
        row["error_total"] = est.peak / measured_total - 1
        for peer in ("accelerate", "deepspeed"):
            v = peers[peer]
            row[f"error_total_{peer}"] = None if v is None else v / measured_total - 1
        rows.append(row)
        print(f"d={d} L={L} V={V} B={B} T={T} {prec} {attn} ckpt={ckpt}: measured "
              f"{measured_step / 2**20:.0f} MiB, predicted {row['predicted_step'] / 2**20:.0f}"
              f" MiB ({row['error']:+.1%})", flush=True)

        _write(args.out, rows, t0)
    print(json.dumps(_write(args.out, rows, t0), indent=2))


def _write(out: str, rows: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Write the results so far (the benchmark is long; partial results stay usable)."""

    def med(key: str, subset: str | None = None) -> float | None:
        vals = [abs(r[key]) for r in rows
                if r[key] is not None and subset in (None, r["set"])]
        return statistics.median(vals) if vals else None

    summary = {"configs": len(rows), "median_abs_error_step": med("error"),
               "median_abs_error_step_holdout": med("error", "holdout"),
               "max_abs_error_step": max(abs(r["error"]) for r in rows),
               "median_abs_error_total": med("error_total"),
               "median_abs_error_total_holdout": med("error_total", "holdout"),
               "median_abs_error_total_accelerate": med("error_total_accelerate"),
               "median_abs_error_total_deepspeed": med("error_total_deepspeed")}
    atomic_write_json(out, {"summary": summary, "rows": rows, "seconds": time.time() - t0})
    return summary


if __name__ == "__main__":
    main()

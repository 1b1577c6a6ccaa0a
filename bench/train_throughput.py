"""Training throughput of lmalloc's Trainer versus nanoGPT, side by side in one run.

For each shape (layers, width) both peers train the same batch (``--micro-batch`` sequences of
``--seq-len`` tokens, one micro-batch per step), fp32 on CPU, dropout 0, AdamW, grad clip 1.0.
Runs alternate (lmalloc, nanoGPT, lmalloc, ...) for ``--repeats`` rounds; each run discards
``--warmup`` steps and reports the median step rate; a peer's figure is the median over its
runs (``*_best``: the best run, the one least disturbed when the machine is shared). We
report tokens/s and achieved FLOP/s per peer, their ratios (of the medians, and the median of
the per-round ratios, the figure least moved by load that changes between rounds), MFU
against this machine's measured fp32 matmul peak, and the load average before and after.

A step is timed from one step's end to the next in both peers: for lmalloc that is the whole
loop of :class:`~lmalloc.train.Trainer` (data, forward, backward, clipping, optimizer,
divergence check, the metrics row written to disk), not only the step's own timer.

The architectures differ (ours: RMSNorm, RoPE, SwiGLU with d_ff ≈ 8/3·d, no biases; nanoGPT:
LayerNorm, learned positions, GELU MLP 4·d, here with bias=False), so the parameter counts and
FLOPs per token differ slightly: **the achieved-FLOP/s ratio is the fair comparison**; tokens/s
is reported too. FLOPs per token: ours from ``lmalloc.model.accounting``; nanoGPT's from its own
PaLM-style formula ``6N + 12·L·T·d`` (N without position embeddings).

nanoGPT is not part of lmalloc: it is imported from ``--nanogpt-dir`` (env ``NANOGPT_DIR``,
default ``/work/scratch/nanogpt``), a checkout of github.com/karpathy/nanoGPT; when absent
that peer is skipped with a message.

    OMP_NUM_THREADS=2 .venv/bin/python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
SHAPES = ((2, 64), (3, 64), (2, 128), (4, 256), (6, 384))


def matmul_peak(n: int = 1536, seconds: float = 3.0) -> float:
    """Best fp32 FLOP/s of a square matmul loop (this machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def make_data(root: Path, vocab: int) -> Path:
    from lmalloc.data.shards import write_token_splits

    rng = np.random.default_rng(0)
    write_token_splits(
        root,
        {"train": [rng.integers(0, vocab, 400_000)], "val": [rng.integers(0, vocab, 20_000)]},
        vocab_size=vocab,
        eot_id=0,
        split_bytes={"train": 1_600_000, "val": 80_000},
    )
    return root


def run_lmalloc(n_layer: int, d: int, a: argparse.Namespace, data: Path) -> dict[str, Any]:
    from lmalloc.model.accounting import param_count, train_flops_per_token
    from lmalloc.model.config import GPTConfig
    from lmalloc.train import Callback, TrainConfig, Trainer

    class StepClock(Callback):  # wall time between consecutive steps' ends: the whole loop
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step(self, trainer: Any, row: dict[str, Any]) -> None:
            self.stamps.append(time.perf_counter())

    cfg = GPTConfig(
        vocab_size=a.vocab,
        n_layer=n_layer,
        n_head=max(2, d // 64),
        d_model=d,
        seq_len=a.seq_len,
        dropout=0.0,
    )
    tc = TrainConfig(
        lr=1e-3,
        batch_tokens=a.micro_batch * a.seq_len,
        micro_batch=a.micro_batch,
        seq_len=a.seq_len,
        max_steps=a.warmup + a.steps,
        eval_tokens=a.seq_len,
        precision="fp32",
        compile=False,
        device="cpu",
        spike_factor=0.0,
        warmup=0.0,
        schedule="constant",
    )
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, tc, data, out, resume=False, callbacks=[clock]).fit()
    times = np.diff(clock.stamps)[a.warmup :]  # step k's time: end of k-1 to end of k
    rate = a.micro_batch * a.seq_len / statistics.median(times)
    fpt = train_flops_per_token(cfg)
    return {
        "tokens_per_s": rate,
        "flops_per_token": fpt,
        "flops_per_s": rate * fpt,
        "params": param_count(cfg),
    }


def run_nanogpt(n_layer: int, d: int, a: argparse.Namespace, data: Path) -> dict[str, Any]:
    from model import GPT, GPTConfig  # nanoGPT's model.py, from --nanogpt-dir

    from lmalloc.data.shards import TokenData

    torch.manual_seed(0)
    cfg = GPTConfig(
        block_size=a.seq_len,
        vocab_size=a.vocab,
        n_layer=n_layer,
        n_head=max(2, d // 64),
        n_embd=d,
        dropout=0.0,
        bias=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints its sizes
        model = GPT(cfg)
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    split = TokenData(data).split("train")
    times = []
    t0 = time.perf_counter()
    for step in range(a.warmup + a.steps):  # nanoGPT train.py's inner loop, one micro-step
        x, y = split.window_batch(step, a.micro_batch, a.seq_len, seed=0)
        x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # train.py reads the loss to log it
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    rate = a.micro_batch * a.seq_len / statistics.median(times[a.warmup + 1 :])  # as ours
    n = model.get_num_params()  # without position embeddings, lm_head (tied) included
    fpt = 6 * n + 12 * n_layer * a.seq_len * d
    return {
        "tokens_per_s": rate,
        "flops_per_token": fpt,
        "flops_per_s": rate * fpt,
        "params": sum(p.numel() for p in model.parameters()),
    }


def bench_shape(
    shape: tuple[int, int], a: argparse.Namespace, data: Path, peak: float, have_nano: bool
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"lmalloc": [], "nanogpt": []}
    for _ in range(a.repeats):  # alternate the peers so load changes hit both alike
        runs["lmalloc"].append(run_lmalloc(*shape, a, data))
        if have_nano:
            runs["nanogpt"].append(run_nanogpt(*shape, a, data))
    out: dict[str, Any] = {"n_layer": shape[0], "d_model": shape[1]}
    for peer, rs in runs.items():
        if not rs:
            continue
        med = {k: statistics.median(r[k] for r in rs) for k in ("tokens_per_s", "flops_per_s")}
        best = {f"{k}_best": max(r[k] for r in rs) for k in ("tokens_per_s", "flops_per_s")}
        out[peer] = {
            **med,
            **best,
            "tokens_per_s_runs": [r["tokens_per_s"] for r in rs],
            "flops_per_token": rs[0]["flops_per_token"],
            "params": rs[0]["params"],
            "mfu": med["flops_per_s"] / peak,
        }
    if have_nano:
        out["ratio_tokens_per_s_rounds"] = [
            ours["tokens_per_s"] / theirs["tokens_per_s"]
            for ours, theirs in zip(runs["lmalloc"], runs["nanogpt"], strict=True)]
        out["ratio_tokens_per_s_median_of_rounds"] = statistics.median(
            out["ratio_tokens_per_s_rounds"])
        out["ratio_tokens_per_s"] = out["lmalloc"]["tokens_per_s"] / out["nanogpt"]["tokens_per_s"]
        out["ratio_flops_per_s"] = out["lmalloc"]["flops_per_s"] / out["nanogpt"]["flops_per_s"]
        # On a shared machine the best run is the one least disturbed by other jobs.
        out["ratio_flops_per_s_best"] = (out["lmalloc"]["flops_per_s_best"]
                                         / out["nanogpt"]["flops_per_s_best"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt-dir", default=os.environ.get("NANOGPT_DIR", "/work/scratch/nanogpt"))
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", default=",".join(f"{n}x{d}" for n, d in SHAPES))
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    have_nano = (Path(a.nanogpt_dir) / "model.py").exists()
    if have_nano:
        sys.path.insert(0, a.nanogpt_dir)
    else:
        print(f"nanoGPT not found at {a.nanogpt_dir}: skipping that peer (set NANOGPT_DIR)")
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    load_before = os.getloadavg()
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.vocab)
        results = []
        for shape in shapes:
            r = bench_shape(shape, a, data, peak, have_nano)  # type: ignore[arg-type]
            results.append(r)
            print(json.dumps(r))
    doc = {
        "benchmark": "train_throughput",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "matmul_peak_flops": peak,
        "settings": {k: v for k, v in vars(a).items() if k != "out"},
        "note": "fp32 on CPU; the machine was shared with other jobs during the run",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "shapes": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

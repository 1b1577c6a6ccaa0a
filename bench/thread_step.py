"""A training step on the thread that started the process versus on a helper thread.

Why this exists: ``lmalloc run`` used to train its search trials on a helper thread while the
main thread polled the progress bar. On this 2-core CPU that made every search step about
1.5x slower: torch's CPU kernels (MKL matmuls above all) ran on the helper thread as if with
one thread. The search now trains on the main thread (``lmalloc.search.study._run_inline``).

The shape is the default demo's search proxy (3 layers x 64, vocab 4096, 128-token windows,
16 per step: the 2,048-token batch): forward, backward, AdamW step. Runs alternate (main,
helper, main, ...) for ``--repeats`` rounds; each discards ``--warmup`` steps; figures are the
medians over rounds of each run's median step time, alongside one run of the main thread
with ``torch.set_num_threads(1)`` for reference.

    .venv/bin/python bench/thread_step.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT

RESULTS = Path(__file__).resolve().parent / "results" / "thread_step.json"


def step_seconds(steps: int, warmup: int, cfg: GPTConfig, batch: int) -> float:
    """Median seconds of one training step, measured on the calling thread."""
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def on_helper_thread(fn: Any, *args: Any) -> float:
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    cfg = GPTConfig(vocab_size=4096, n_layer=3, n_head=4, d_model=64, seq_len=128)
    batch = 2048 // cfg.seq_len
    main_s, helper_s = [], []
    for r in range(a.repeats):
        main_s.append(step_seconds(a.steps, a.warmup, cfg, batch))
        helper_s.append(on_helper_thread(step_seconds, a.steps, a.warmup, cfg, batch))
        print(f"round {r + 1}: main {1e3 * main_s[-1]:.1f} ms, helper thread "
              f"{1e3 * helper_s[-1]:.1f} ms", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = step_seconds(a.steps, a.warmup, cfg, batch)
    torch.set_num_threads(threads)
    res = {
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": threads,
        "shape": "3x64, vocab 4096, 16 x 128 tokens", "repeats": a.repeats, "steps": a.steps,
        "main_ms": 1e3 * statistics.median(main_s),
        "helper_thread_ms": 1e3 * statistics.median(helper_s),
        "main_one_thread_ms": 1e3 * one,
        "helper_over_main": statistics.median(
            h / m for h, m in zip(helper_s, main_s, strict=True)),
        "rounds": {"main_ms": [1e3 * s for s in main_s],
                   "helper_thread_ms": [1e3 * s for s in helper_s]},
    }
    print(json.dumps({k: v for k, v in res.items() if k != "rounds"}, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

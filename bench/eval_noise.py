"""How many val tokens an evaluation needs: the noise of a loss estimate against the noise of
the difference between two models evaluated on the same tokens.

Trains two 2 × 64 models (learning rates 1e-2 and 3e-3, ``--steps`` steps of 2048 tokens) on a
prepared data folder, computes each 128-token window's mean loss on the start of the val split,
and prints, for growing token counts, the standard error of each model's loss and of their
paired difference (window spread / sqrt(windows)), and the prefix's mean against the whole.

    .venv/bin/lmalloc prepare ../shared/data/wikitext-2/train.txt --run /tmp/wt2
    OMP_NUM_THREADS=1 .venv/bin/python bench/eval_noise.py /tmp/wt2/data --steps 100
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmalloc.data.shards import TokenData
from lmalloc.model.config import GPTConfig
from lmalloc.train import TrainConfig, Trainer


def window_losses(model: torch.nn.Module, split: object, vocab: int,
                  max_tokens: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for x, y in split.sequential_batches(16, 128, 0, 1, max_tokens):  # type: ignore
            logits, _ = model(torch.from_numpy(np.ascontiguousarray(x)))
            t = torch.from_numpy(np.ascontiguousarray(y)).reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, vocab), t, reduction="none")
            out.append(loss.view(x.shape[0], -1).mean(1))
    return torch.cat(out).double()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=131072)
    a = p.parse_args()
    data = TokenData(a.data)
    V = data.vocab_size
    cfg = GPTConfig(vocab_size=V, n_layer=2, n_head=2, d_model=64, seq_len=128)
    val = data.split("val")
    w = {}
    for lr in (1e-2, 3e-3):
        tc = TrainConfig(lr=lr, batch_tokens=2048, micro_batch=16, seq_len=128,
                         max_steps=a.steps, device="cpu", eval_tokens=128)
        tr = Trainer(cfg, tc, a.data, tempfile.mkdtemp(), resume=False)
        tr.fit()
        w[lr] = window_losses(tr.model.eval(), val, V, a.max_tokens)
    print(f"val tokens {val.num_tokens}, evaluated {len(w[1e-2]) * 128}")
    for name, x in (("lr 1e-2", w[1e-2]), ("lr 3e-3", w[3e-3]), ("difference", w[1e-2] - w[3e-3])):
        sd = float(x.std())
        print(f"{name}: mean {float(x.mean()):.4f}, sd per window {sd:.4f}")
        n = 16
        while n <= len(x):
            print(f"  {n * 128:7d} tokens: se {sd / math.sqrt(n):.4f}, "
                  f"prefix mean {float(x[:n].mean()):.4f}")
            n *= 2


if __name__ == "__main__":
    main()

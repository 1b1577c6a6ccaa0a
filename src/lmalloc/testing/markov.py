"""A sparse random Markov chain as a tiny language-modelling task, for learning-rate transfer
tests and benchmarks on CPU: each token has 3 likely successors, with ``noise`` of uniform
random tokens, so a small GPT learns it in tens of steps and the loss has a clear optimum in
the learning rate."""

from __future__ import annotations

import math

import torch

from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT


def markov_batches(vocab: int, seq_len: int, batch: int, steps: int, seed: int = 0,
                   noise: float = 0.1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` (inputs, targets) pairs of shape (batch, seq_len) from one fixed chain."""
    gen = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, vocab, (vocab, 3), generator=gen)  # 3 likely successors per token
    out = []
    for _ in range(steps):
        x = torch.empty(batch, seq_len + 1, dtype=torch.long)
        x[:, 0] = torch.randint(0, vocab, (batch,), generator=gen)
        choice = torch.randint(0, 3, (batch, seq_len), generator=gen)
        flip = torch.rand(batch, seq_len, generator=gen) < noise
        rnd = torch.randint(0, vocab, (batch, seq_len), generator=gen)
        for t in range(seq_len):
            x[:, t + 1] = torch.where(flip[:, t], rnd[:, t], succ[x[:, t], choice[:, t]])
        out.append((x[:, :-1], x[:, 1:]))
    return out


def tail_loss(cfg: GPTConfig, lr: float, data: list[tuple[torch.Tensor, torch.Tensor]],
              tail: int = 8, seed: int = 0) -> float:
    """Train a fresh ``GPT(cfg)`` with AdamW (betas 0.9/0.95, no weight decay, constant
    ``lr`` through ``optim_groups``) on ``data``; the mean train loss of the last ``tail``
    steps, or inf if it diverged."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.optim_groups(lr, 0.0), lr=lr, betas=(0.9, 0.95))
    losses = []
    for x, y in data:
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mean = sum(losses[-tail:]) / tail
    return mean if math.isfinite(mean) else math.inf

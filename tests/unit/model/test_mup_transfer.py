"""μP transfer: the loss-optimal learning rate moves less with width under μP than under SP.

A tiny 2-layer GPT learns a sparse random Markov chain (each token has 3 likely successors,
10% noise) for 30 AdamW steps, at widths 32 and 128 (head_dim 16, so heads grow with width),
over a log2 grid of learning rates, in the standard parametrisation (SP) and in μP with base
width 32. The optimum (sub-grid, a parabola through the best grid point and its neighbours,
in log2 lr) is compared across widths. Measured on CPU: SP moves 2-3 log2 steps (the wider
model wants a smaller lr), μP at most 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from lmalloc.model.config import GPTConfig
from lmalloc.testing.markov import markov_batches as markov
from lmalloc.testing.markov import tail_loss

V, T, B, STEPS = 64, 32, 16, 30
LOG2_LRS = list(range(-10, -1))
WIDTHS = (32, 128)


def markov_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return markov(V, T, B, STEPS)


def final_loss(width: int, lr: float, mup: bool,
               data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean train loss over the last 8 of STEPS AdamW steps (inf if it diverged)."""
    cfg = GPTConfig(vocab_size=V, n_layer=2, n_head=width // 16, d_model=width, seq_len=T,
                    mup_base_width=WIDTHS[0] if mup else None)
    return tail_loss(cfg, lr, data)


def optimum(losses: list[float]) -> float:
    """log2 of the best lr, refined by a parabola through the best point and neighbours."""
    i = min(range(len(losses)), key=losses.__getitem__)
    if 0 < i < len(losses) - 1 and all(math.isfinite(v) for v in losses[i - 1:i + 2]):
        a, b, c = losses[i - 1:i + 2]
        denom = a - 2 * b + c
        if denom > 0:
            return LOG2_LRS[i] + 0.5 * (a - c) / denom
    return float(LOG2_LRS[i])


@pytest.mark.slow
def test_optimal_lr_transfers_across_width_under_mup() -> None:
    torch.set_num_threads(1)
    data = markov_batches()
    shift = {}
    for mup in (False, True):
        best = [optimum([final_loss(w, 2.0**k, mup, data) for k in LOG2_LRS]) for w in WIDTHS]
        shift["mup" if mup else "sp"] = abs(best[1] - best[0])
    # the grid spans the optimum at both widths, and SP does move (else the test is vacuous)
    assert shift["sp"] >= 1.0, shift
    # μP moves less than SP by at least half a log2 step
    assert shift["mup"] + 0.5 <= shift["sp"], shift

"""Helpers shared by the compress tests (a tiny random GPT)."""

from __future__ import annotations

import torch

from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT

VOCAB = 64


def tiny_model(seed: int = 0) -> GPT:
    """A random 2-layer GPT, width 32, in eval mode."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, d_model=32, seq_len=32)
    return GPT(cfg).eval()

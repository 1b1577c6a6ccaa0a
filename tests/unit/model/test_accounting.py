"""Parameter and FLOP counts against the module itself and torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmalloc.model.accounting import (
    forward_flops_per_token,
    param_count,
    train_flops_per_token,
)
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT

SHAPES = [
    dict(),
    dict(tie_embeddings=False),
    dict(n_kv_head=2),
    dict(n_kv_head=1, tie_embeddings=False, d_ff=40),
]


def make(**kw: object) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=97, n_layer=2, n_head=4, d_model=32, seq_len=16),
                        **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", SHAPES)
def test_param_count_matches_module(kw: dict[str, object]) -> None:
    cfg = make(**kw)
    model = GPT(cfg)
    total = sum(p.numel() for p in model.parameters())  # a tied weight is yielded once
    assert param_count(cfg) == total
    emb = model.transformer.wte.weight.numel() + model.lm_head.weight.numel() * (
        0 if cfg.tie_embeddings else 1)
    assert param_count(cfg, non_embedding=True) == total - emb


def _count(cfg: GPTConfig, backward: bool) -> int:
    """FLOPs the counter measures; the math SDPA backend, because the counter has no formula
    for the fused CPU attention kernel (it would count attention as 0)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    grad = torch.enable_grad() if backward else torch.no_grad()  # the CPU training loss
    with grad, sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)  # computes its gradient matmuls in the forward
        if backward:
            assert loss is not None
            loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("kw", SHAPES)
def test_flops_match_torch_counter(kw: dict[str, object]) -> None:
    cfg = make(**kw)
    tokens = 2 * cfg.seq_len
    fwd = _count(cfg, backward=False) / tokens
    train = _count(cfg, backward=True) / tokens
    # Exact agreement: the counter counts matmuls only, as our convention does (the embedding
    # gather, norms, RoPE, softmax and the loss are not matmuls), and every matmul's backward
    # computes both operand gradients (the first block's input gradient feeds the embedding).
    assert fwd == pytest.approx(forward_flops_per_token(cfg), rel=1e-9)
    assert train == pytest.approx(train_flops_per_token(cfg), rel=1e-9)


def test_flops_scale_with_seq_len() -> None:
    cfg = make()
    extra = forward_flops_per_token(cfg, seq_len=32) - forward_flops_per_token(cfg, seq_len=16)
    assert extra == 4 * cfg.n_layer * 16 * cfg.d_model

"""The GPT module: shapes, loss, KV cache, init, parameter groups, μP plumbing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT


def make(**kw: object) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=61, n_layer=2, n_head=4, d_model=32, seq_len=24),
                        **kw})  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("kw", [dict(), dict(tie_embeddings=False), dict(n_kv_head=2),
                                dict(mup_base_width=16)])
def test_forward_shapes_and_loss(kw: dict[str, object]) -> None:
    cfg = make(**kw)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 10))
    tgt = torch.randint(0, cfg.vocab_size, (3, 10))
    with torch.no_grad():
        logits, loss = model(idx, tgt)
    assert logits.shape == (3, 10, cfg.vocab_size)
    assert loss is not None
    expected = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), tgt.reshape(-1))
    assert torch.allclose(loss, expected)
    no_logits, train_loss = model(idx, tgt)  # CPU training: the fused loss, no logits
    assert no_logits is None and train_loss is not None
    torch.testing.assert_close(train_loss, expected)
    # a fresh model predicts near-uniformly
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.5
    assert model(idx)[1] is None


def test_causal() -> None:
    model = GPT(make()).eval()
    idx = torch.randint(0, 61, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 61
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_head=1)])
def test_kv_cache_matches_full_forward(kw: dict[str, object]) -> None:
    model = GPT(make(**kw)).eval()
    idx = torch.randint(0, 61, (2, 20))
    full, _ = model(idx)
    cache = model.new_cache(2)
    parts = [model(idx[:, :7], cache=cache)[0]]  # prefill
    parts.append(model(idx[:, 7:11], cache=cache)[0])  # a chunk after a prefix
    parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(11, 20)]  # one at a time
    assert cache.pos == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_too_long_sequence_is_refused() -> None:
    model = GPT(make())
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_tied_and_untied_weights() -> None:
    tied, untied = GPT(make()), GPT(make(tie_embeddings=False))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight


def test_gpt2_init() -> None:
    cfg = make(n_layer=8, d_model=256, n_head=4, vocab_size=512)
    model = GPT(cfg)
    blk = model.transformer.h[0]
    assert blk.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert blk.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert torch.all(blk.ln_1.weight == 1)
    mup = GPT(GPTConfig(**{**cfg.to_dict(), "mup_base_width": 64}))
    assert mup.transformer.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("kw", [dict(), dict(tie_embeddings=False), dict(mup_base_width=8)])
def test_optim_groups_cover_every_parameter_once(kw: dict[str, object]) -> None:
    model = GPT(make(**kw))
    groups = model.optim_groups(lr=1e-3, weight_decay=0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_mult"])
        for p in g["params"]:
            if g["weight_decay"] > 0:
                assert p.dim() == 2 and p is not model.transformer.wte.weight
    norms = {id(p) for n, p in model.named_parameters() if "ln" in n}
    assert all(g["weight_decay"] == 0 for g in groups if any(id(p) in norms for p in g["params"]))
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid AdamW groups


def test_mup_lr_multipliers() -> None:
    model = GPT(make(mup_base_width=8))  # width multiplier 4
    groups = model.optim_groups(lr=1e-2, weight_decay=0.0)
    c_attn = model.transformer.h[0].attn.c_attn.weight
    hidden = next(g for g in groups if any(p is c_attn for p in g["params"]))
    assert hidden["lr_mult"] == pytest.approx(0.25)
    emb = next(g for g in groups if any(p is model.transformer.wte.weight for p in g["params"]))
    assert emb["lr_mult"] == 1.0
    assert model.logit_scale == pytest.approx(0.25)
    decay_emb = model.optim_groups(1e-2, 0.1, decay_embeddings=True)
    emb = next(g for g in decay_emb if any(p is model.transformer.wte.weight
                                           for p in g["params"]))
    assert emb["weight_decay"] == 0.1


def test_dropout_only_in_training() -> None:
    model = GPT(make(dropout=0.5))
    idx = torch.randint(0, 61, (1, 8))
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_bf16_autocast_forward_backward() -> None:
    model = GPT(make(n_kv_head=2))
    idx = torch.randint(0, 61, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert model.transformer.h[0].attn.c_attn.weight.grad is not None


def test_cpu_rmsnorm_matches_torch_and_gradcheck() -> None:
    """The analytic-backward RMSNorm equals nn.RMSNorm in value and gradient."""
    from lmalloc.model.gpt import RMSNorm, _RMSNormCPU

    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.rand(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormCPU.apply(a, b, 1e-5), (x, w))
    ours, ref = RMSNorm(8, eps=1e-5), torch.nn.RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    x32 = torch.randn(4, 6, 8, requires_grad=True)
    g = torch.randn(4, 6, 8)
    (ours(x32) * g).sum().backward()
    gx, gw = x32.grad.clone(), ours.weight.grad.clone()
    x32.grad = None
    (ref(x32) * g).sum().backward()
    torch.testing.assert_close(ours(x32), ref(x32))
    torch.testing.assert_close(gx, x32.grad)
    torch.testing.assert_close(gw, ref.weight.grad)

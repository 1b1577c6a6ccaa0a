"""The memory model's structure: what scales with what (no measurements here)."""

from __future__ import annotations

import pytest

from lmalloc.cost.memory import (
    activation_bytes_per_token,
    estimate_memory,
    inference_memory,
    recommend,
)
from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig

CFG = GPTConfig(vocab_size=50304, n_layer=12, n_head=12, d_model=768, seq_len=1024)


def test_adamw_fp32_is_16_bytes_per_parameter() -> None:
    m = estimate_memory(CFG, 1, precision="fp32")
    N = param_count(CFG)
    assert (m.weights, m.gradients, m.optimizer) == (4 * N, 4 * N, 8 * N)
    assert m.static == 16 * N


def test_pure_bf16_halves_the_static_part() -> None:
    fp32 = estimate_memory(CFG, 1, precision="fp32")
    pure = estimate_memory(CFG, 1, precision="bf16-pure")
    assert pure.static == pytest.approx(fp32.static / 2)
    mixed = estimate_memory(CFG, 1, precision="bf16")
    assert mixed.static == fp32.static  # fp32 master weights, grads and moments
    assert mixed.activations < fp32.activations


@pytest.mark.parametrize("k", [2, 4, 8])
def test_zero_stages_divide_by_k(k: int) -> None:
    one = estimate_memory(CFG, 4, precision="bf16", parallel="ddp", devices=k)
    z1 = estimate_memory(CFG, 4, precision="bf16", parallel="zero1", devices=k)
    z2 = estimate_memory(CFG, 4, precision="bf16", parallel="zero2", devices=k)
    z3 = estimate_memory(CFG, 4, precision="bf16", parallel="fsdp", devices=k)
    assert z1.optimizer == pytest.approx(one.optimizer / k) and z1.gradients == one.gradients
    assert z2.gradients == pytest.approx(one.gradients / k)
    assert z3.weights == pytest.approx(one.weights / k)
    assert one.peak > z1.peak > z2.peak > z3.peak
    assert z3.activations == one.activations  # sharding does not touch activations


def test_ddp_adds_gradient_buckets() -> None:
    single = estimate_memory(CFG, 4, precision="fp32")
    ddp = estimate_memory(CFG, 4, precision="fp32", parallel="ddp", devices=4)
    assert ddp.buffers - single.buffers == pytest.approx(ddp.gradients)


def test_activations_scale_with_micro_batch_and_checkpointing() -> None:
    a1 = estimate_memory(CFG, 2).activations
    a2 = estimate_memory(CFG, 4).activations
    assert a2 == pytest.approx(2 * a1)
    ckpt = estimate_memory(CFG, 4, activation_checkpointing=True).activations
    assert ckpt < a2 / 4


def test_math_attention_keeps_the_score_matrix() -> None:
    per = {T: activation_bytes_per_token(CFG, T, "fp32", "math")
           - activation_bytes_per_token(CFG, T, "fp32", "sdpa") for T in (512, 1024)}
    # softmax probabilities: heads x T x 4 bytes per layer and token: grows with T
    assert per[1024] == pytest.approx(2 * per[512])
    assert per[1024] == pytest.approx(CFG.n_layer * CFG.n_head * 1024 * 4)


def test_logits_scale_with_vocabulary() -> None:
    small = GPTConfig(vocab_size=1000, n_layer=2, n_head=2, d_model=64)
    big = GPTConfig(vocab_size=2000, n_layer=2, n_head=2, d_model=64)
    assert estimate_memory(big, 2).logits == pytest.approx(2 * estimate_memory(small, 2).logits)


def test_kv_cache_and_quantized_weights() -> None:
    gqa = GPTConfig(vocab_size=256, n_layer=2, n_head=4, d_model=64, n_kv_head=2)
    mha = GPTConfig(vocab_size=256, n_layer=2, n_head=4, d_model=64)
    assert inference_memory(gqa, 1, 100).kv_cache == 2 * 2 * 100 * 2 * 16 * 2
    assert inference_memory(mha, 1, 100).kv_cache == 2 * inference_memory(gqa, 1, 100).kv_cache
    w16 = inference_memory(CFG, weight_bits=16).weights
    w4 = inference_memory(CFG, weight_bits=4).weights
    assert w4 == pytest.approx(w16 / 4 * (1 + 16 / (4 * 128)))


def test_recommend_prefers_cheap_layouts_and_says_what_would_fit() -> None:
    small = recommend(CFG, 80e9, batch_tokens=2**19, seq_len=1024, devices=8)
    assert small.fits and small.parallel == "ddp" and not small.activation_checkpointing
    assert small.micro_batch * small.grad_accum * 8 * 1024 == 2**19
    big = GPTConfig(vocab_size=50304, n_layer=48, n_head=64, d_model=8192, seq_len=2048)
    tight = recommend(big, 80e9, batch_tokens=2**21, seq_len=2048, devices=64)
    assert tight.fits and tight.parallel == "fsdp"
    nofit = recommend(big, 24e9, batch_tokens=2**14, seq_len=2048, devices=1)
    assert not nofit.fits and "at least" in (nofit.suggestion or "")


def test_bad_inputs() -> None:
    with pytest.raises(UserError, match="precision"):
        estimate_memory(CFG, 1, precision="fp8")
    with pytest.raises(UserError, match="parallel"):
        estimate_memory(CFG, 1, parallel="tp")
    with pytest.raises(UserError, match="micro_batch"):
        estimate_memory(CFG, 0)
    with pytest.raises(UserError, match="batch_tokens"):
        recommend(CFG, 80e9, batch_tokens=100, seq_len=1024)


def test_recommend_offers_only_layouts_the_trainer_runs() -> None:
    """Every recommendation is a layout ``lmalloc train`` runs, at a micro-batch that fits it."""
    from lmalloc.train.distributed import PARALLEL_MODES

    big = GPTConfig(vocab_size=50304, n_layer=24, n_head=16, d_model=2048, seq_len=2048)
    seen = set()
    for devices in (1, 2, 8):
        for mem in (8e9, 16e9, 24e9, 40e9, 80e9):
            rec = recommend(big, mem, batch_tokens=2**20, seq_len=2048, devices=devices)
            assert rec.parallel in ("single", *PARALLEL_MODES)
            assert (rec.parallel == "single") == (devices == 1)
            seen.add((rec.parallel, rec.activation_checkpointing))
            if rec.fits:
                est = estimate_memory(big, rec.micro_batch, 2048, "bf16", rec.parallel,
                                      devices, rec.activation_checkpointing,
                                      grad_accum=rec.grad_accum)
                assert est.peak <= rec.memory_limit and est == rec.memory
    # the sweep reaches checkpointing and FSDP, so the test sees more than the cheapest layout
    assert ("fsdp", False) in seen and any(ckpt for _, ckpt in seen)

"""Gradchecks of the CPU autograd Functions in ``lmalloc.model.gpt`` (RMSNorm, RoPE + QKV split,
SwiGLU) against torch's composite implementations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmalloc.model.gpt import _RMSNormCPU, _RopeQKVCPU, _SwiGLUCPU, apply_rope, rope_tables


def test_rmsnorm_gradcheck() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormCPU.apply(a, b, 1e-5), (x, w))


def test_rope_qkv_gradcheck_and_matches_composite() -> None:
    nq, nkv, hd, T = 4, 2, 8, 5
    cos, sin = rope_tables(hd, T, 10000.0)
    cos, sin = cos.double()[:, None], sin.double()[:, None]  # (T, 1, hd)
    qkv = torch.randn(2, T, nq + 2 * nkv, hd, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _RopeQKVCPU.apply(t, cos, sin, nq, nkv), (qkv,))
    q, k, v = _RopeQKVCPU.apply(qkv, cos, sin, nq, nkv)
    qk = apply_rope(qkv[:, :, : nq + nkv], cos, sin)
    torch.testing.assert_close(torch.cat((q, k), dim=2), qk)
    torch.testing.assert_close(v, qkv[:, :, nq + nkv :])


def test_swiglu_gradcheck_and_matches_composite() -> None:
    h = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_SwiGLUCPU.apply, (h,))
    gate, up = h.chunk(2, dim=-1)
    torch.testing.assert_close(_SwiGLUCPU.apply(h), F.silu(gate) * up)

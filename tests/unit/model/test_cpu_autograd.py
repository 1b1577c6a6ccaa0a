"""Gradchecks of the CPU autograd Functions in ``lmalloc.model.gpt`` (RMSNorm, RoPE + QKV split,
SwiGLU) and ``lmalloc.model.loss`` (output projection + cross entropy) against torch's
composite implementations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmalloc.model.gpt import _RMSNormCPU, _RopeQKVCPU, _SwiGLUCPU, apply_rope, rope_tables
from lmalloc.model.loss import LinearCrossEntropyCPU


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


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_linear_cross_entropy_gradcheck_and_matches_composite(scale: float) -> None:
    N, C, V = 300, 4, 7  # 300 rows: three chunks of 128
    h = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, C, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (N,))
    t[::7] = -1  # ignored positions
    assert torch.autograd.gradcheck(lambda a, b: LinearCrossEntropyCPU.apply(a, b, t, scale),
                                    (h, w))
    ours = LinearCrossEntropyCPU.apply(h, w, t, scale)
    ours.backward()
    gh, gw = h.grad.clone(), w.grad.clone()  # type: ignore[union-attr]
    h.grad = w.grad = None
    ref = F.cross_entropy(scale * h @ w.t(), t, ignore_index=-1)
    ref.backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gw, w.grad)


def test_linear_cross_entropy_exact_when_the_target_probability_underflows() -> None:
    h = torch.tensor([[200.0, 0.0], [1.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    t = torch.tensor([2, 1])  # row 0: p_t = exp(-400) underflows in fp32
    ours = LinearCrossEntropyCPU.apply(h, w, t, 1.0)
    ref = F.cross_entropy(h @ w.t(), t)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, ref)

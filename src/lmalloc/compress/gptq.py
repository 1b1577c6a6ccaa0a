"""Error-compensating weight quantization in the style of GPTQ (Frantar et al., 2023).

For a linear layer ``y = W x`` and calibration inputs ``X`` (rows are tokens), GPTQ minimises
the layer's output error ``‖X Wᵀ − X Ŵᵀ‖²`` instead of the weight error ``‖W − Ŵ‖²`` that
round-to-nearest (RTN) minimises. With ``H = 2 XᵀX / n + λ I`` (λ: a small damping, a fraction
of the mean diagonal) it quantizes one input column at a time and spreads that column's
rounding error over the columns not yet quantized, weighted by the inverse Hessian:

    e = (w_j − q(w_j)) / [H⁻¹]_jj ;   W[:, j+1:] −= e · [H⁻¹]_{j, j+1:}

using the upper Cholesky factor of ``H⁻¹`` (numerically stable, the paper's formulation), in
blocks of columns with the update to later blocks applied once per block ("lazy batch"). A
group's scale and zero point are fixed from the *error-updated* weights when the column loop
enters the group, so the result is the very format of :mod:`lmalloc.compress.quantize`
(packed codes + fp16 scales + uint8 zeros): stored, counted and loaded the same way.

Why our own code: torchao's GPTQ (``Int4WeightOnlyGPTQQuantizer``) is written for its gpt-fast
model layout and int4 tinygemm packing (CUDA kernels), and the maintained GPTQ libraries
(GPTQModel, llm-compressor, auto-gptq) quantize Hugging Face ``transformers`` models into
their own packed layouts. None takes our GPT module and our 2/3/4/8-bit group layout on CPU;
the algorithm itself is ~60 lines of linear algebra.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from lmalloc.compress.quantize import (
    KEEP,
    TIED,
    QuantFormat,
    QuantLinear,
    quantizable_layers,
    quantize_weight,
    set_module,
)

METHODS = ("rtn", "gptq")


@dataclass
class HessianAccumulator:
    """Running ``2 XᵀX / n`` over the calibration tokens seen by one layer."""

    h: torch.Tensor
    n: int = 0

    @classmethod
    def zeros(cls, in_features: int) -> HessianAccumulator:
        return cls(torch.zeros(in_features, in_features, dtype=torch.float64))

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()  # (tokens, in)
        m = x.shape[0]
        self.h.mul_(self.n / (self.n + m)).add_(x.T @ x, alpha=2.0 / (self.n + m))
        self.n += m


CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def _params_of(wg: torch.Tensor, fmt: QuantFormat
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scale and zero of one column group ``(out, k)``, from the same code as RTN: the fp32
    scale used for rounding (0 → 1), the float zero, and the stored fp16 scale / uint8 zero."""
    _, scale, zero = quantize_weight(wg, QuantFormat(fmt.bits, wg.shape[1], fmt.symmetric))
    scale, zero = scale[:, 0], None if zero is None else zero[:, 0]
    s = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    z = torch.full_like(s, 2.0 ** (fmt.bits - 1)) if zero is None else zero.float()
    return s, z, scale, zero


def _group_params(wg: torch.Tensor, fmt: QuantFormat, importance: torch.Tensor,
                  grid: tuple[float, ...] = CLIP_GRID
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`_params_of` with the range clipped per row to the factor of ``grid`` that
    minimises the importance-weighted (``diag H``) rounding error of the group: with few
    levels, giving up the extreme weights buys a finer step for all the others."""
    qmax = 2**fmt.bits - 1
    lo, hi = wg.amin(1, keepdim=True).clamp(max=0), wg.amax(1, keepdim=True).clamp(min=0)
    if fmt.symmetric:
        hi = torch.maximum(hi, -lo)
        lo = -hi
    best: tuple[torch.Tensor, ...] | None = None
    for c in grid:
        s, z, s16, z8 = _params_of(wg.clamp(lo * c, hi * c) if c < 1 else wg, fmt)
        q = (torch.clamp(torch.round(wg / s[:, None]) + z[:, None], 0, qmax) - z[:, None])
        err = ((wg - q * s[:, None]).pow(2) * importance[None, :]).sum(1)
        if best is None:
            best = (err, s, z, s16, z8 if z8 is not None else s16)
            continue
        take = err < best[0]
        best = tuple(torch.where(take, new, old)
                     for new, old in zip((err, s, z, s16, z8 if z8 is not None else s16),
                                         best, strict=True))
    assert best is not None
    return best[1], best[2], best[3], None if fmt.symmetric else best[4]


def _inverse_hessian_factor(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of ``(H + λI)⁻¹`` and the mask of dead input columns."""
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    lam = damp * float(torch.diag(h).mean())
    h.diagonal().add_(lam)
    for _ in range(6):  # grow the damping if H is numerically indefinite
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            break
        h.diagonal().add_(lam * 10)
        lam *= 10
    hinv = torch.cholesky_inverse(chol)
    return torch.linalg.cholesky(hinv, upper=True), dead


@torch.no_grad()
def gptq_quantize_weight(w: torch.Tensor, h: torch.Tensor, fmt: QuantFormat,
                         damp: float = 0.01, block: int = 128, mask: torch.Tensor | None = None,
                         clip: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GPTQ codes ``(out, in)`` int16, scales ``(out, groups)`` fp16, zeros ``(out, groups)``
    uint8 (None when symmetric) — the same triple as :func:`quantize_weight`.

    Args:
        w: the ``(out, in)`` weight.
        h: ``2 XᵀX / n`` of the layer's inputs, ``(in, in)``.
        damp: damping as a fraction of the mean diagonal of ``h``.
        block: columns per lazy batch (rounded up to a multiple of the group size).
        mask: keep-mask of a pruned weight: pruned weights get the zero point's code (exactly
            0 after dequantization) and their error is compensated like rounding error
            (as in SparseGPT), so pruning survives quantization.
        clip: search each group's clipping range (:data:`CLIP_GRID`) for the least
            ``diag(H)``-weighted rounding error; off: the group's full min–max range, as RTN.
    """
    out_f, in_f = w.shape
    gs = fmt.group_size
    qmax = 2**fmt.bits - 1
    diag = torch.diag(h).float().clamp(min=1e-12)
    grid = CLIP_GRID if clip else (1.0,)
    u, dead = _inverse_hessian_factor(h.double(), damp)
    u = u.float()
    W = w.detach().float().clone()
    W[:, dead] = 0.0
    codes = torch.zeros(out_f, in_f, dtype=torch.int16)
    n_groups = -(-in_f // gs)
    scales = torch.zeros(out_f, n_groups, dtype=torch.float16)
    zeros = None if fmt.symmetric else torch.zeros(out_f, n_groups, dtype=torch.uint8)
    block = max(gs, -(-block // gs) * gs)
    for b0 in range(0, in_f, block):
        b1 = min(b0 + block, in_f)
        W1, err = W[:, b0:b1].clone(), torch.zeros(out_f, b1 - b0)
        u1 = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = b0 + i
            if j % gs == 0:
                s, z, s16, z8 = _group_params(W1[:, i:i + gs], fmt, diag[j:j + gs], grid)
                scales[:, j // gs] = s16
                if zeros is not None and z8 is not None:
                    zeros[:, j // gs] = z8
            col = W1[:, i]
            c = torch.clamp(torch.round(col / s) + z, 0, qmax)
            if mask is not None:
                c = torch.where(mask[:, j], c, z)
            codes[:, j] = c.to(torch.int16)
            e = (col - (c - z) * s) / u1[i, i]
            W1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err[:, i] = e
        W[:, b1:] -= err @ u[b0:b1, b1:]
    return codes, scales, zeros


def gptq_linear(linear: nn.Linear, h: torch.Tensor, fmt: QuantFormat,
                damp: float = 0.01, mask: torch.Tensor | None = None) -> QuantLinear:
    """A :class:`QuantLinear` holding the GPTQ quantization of ``linear``."""
    return QuantLinear.from_codes(linear.in_features, linear.out_features, fmt,
                                  *gptq_quantize_weight(linear.weight, h, fmt, damp,
                                                        mask=mask))


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor],
                     names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """``2 XᵀX / n`` of the inputs of each named quantizable layer (all by default), from
    forward passes of ``model`` over ``batches`` (token id tensors ``(B, T)``)."""
    layers = quantizable_layers(model)
    wanted = list(layers) if names is None else list(names)
    acc = {n: HessianAccumulator.zeros(layers[n].in_features) for n in wanted}
    hooks = [layers[n].register_forward_hook(
        lambda _m, inp, _o, n=n: acc[n].add(inp[0])) for n in wanted]
    try:
        for idx in batches:
            model(idx)
    finally:
        for hk in hooks:
            hk.remove()
    return {n: a.h for n, a in acc.items()}


def _stages(names: Iterable[str]) -> list[list[str]]:
    """Layers grouped by transformer block (``transformer.h.<i>.``), in forward order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        parts = n.split(".")
        key = ".".join(parts[:3]) if parts[:2] == ["transformer", "h"] else n
        groups.setdefault(key, []).append(n)
    return list(groups.values())


@torch.no_grad()
def gptq_quantize_model(model: nn.Module, formats: dict[str, str],
                        batches: list[torch.Tensor], damp: float = 0.01,
                        masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``model`` with each named layer GPTQ-quantized to its format (``keep``:
    unchanged), block by block: a block's Hessians come from inputs that already went through
    the quantized blocks before it (as in the paper), so later blocks compensate earlier
    blocks' errors too."""
    out = copy.deepcopy(model)
    todo = [n for n in quantizable_layers(out, tied=True) if formats.get(n, KEEP) != KEEP]
    for stage in _stages(todo):
        if stage == [TIED]:  # the tied head is the embedding too: GPTQ fits only one role
            set_module(out, TIED, QuantLinear.from_linear(
                quantizable_layers(out, tied=True)[TIED], QuantFormat.parse(formats[TIED])))
            continue
        hs = collect_hessians(out, batches, stage)
        layers = quantizable_layers(out)
        for n in stage:
            set_module(out, n, gptq_linear(layers[n], hs[n], QuantFormat.parse(formats[n]),
                                           damp, (masks or {}).get(n)))
    return out

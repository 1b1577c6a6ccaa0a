from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _compressdata import VOCAB, tiny_model

from lmalloc.compress.gptq import (
    HessianAccumulator,
    collect_hessians,
    gptq_linear,
    gptq_quantize_model,
    gptq_quantize_weight,
)
from lmalloc.compress.quantize import (
    QuantFormat,
    dequantize,
    fake_quantize,
    quantizable_layers,
    quantize_model,
    size_bytes,
)
from lmalloc.compress.store import load_quantized, save_quantized


def _correlated_inputs(n: int = 1024, d: int = 96, seed: int = 0) -> torch.Tensor:
    """Inputs with strongly correlated channels of unequal scale (as in real activations)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    x = torch.randn(n, d, generator=g) @ mix + 0.05 * torch.randn(n, d, generator=g)
    return x * torch.linspace(0.2, 3.0, d)


def _output_error(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    return float((x @ (w - wq).T).pow(2).sum())


def test_hessian_accumulates_in_batches() -> None:
    x = _correlated_inputs(300, 16)
    acc = HessianAccumulator.zeros(16)
    for chunk in x.split(70):
        acc.add(chunk)
    ref = 2 * x.double().T @ x.double() / 300
    assert acc.n == 300 and torch.allclose(acc.h, ref, atol=1e-10)


@pytest.mark.parametrize(("bits", "symmetric"), [(2, False), (3, False), (4, False), (4, True)])
def test_gptq_output_error_below_rtn(bits: int, symmetric: bool) -> None:
    x = _correlated_inputs()
    w = 0.05 * torch.randn(64, 96, generator=torch.Generator().manual_seed(1))
    fmt = QuantFormat(bits, 32, symmetric)
    h = 2 * x.T @ x / x.shape[0]
    wg = dequantize(*gptq_quantize_weight(w, h, fmt), fmt)
    rtn, gptq = _output_error(x, w, fake_quantize(w, fmt)), _output_error(x, w, wg)
    assert gptq < 0.9 * rtn, (gptq, rtn)


def test_gptq_codes_are_in_range_and_dead_inputs_zeroed() -> None:
    x = _correlated_inputs(512, 40)
    x[:, 7] = 0.0  # a channel that never fires: its weights carry no information
    w = torch.randn(24, 40, generator=torch.Generator().manual_seed(2))
    fmt = QuantFormat(3, 16)
    codes, scale, zero = gptq_quantize_weight(w, 2 * x.T @ x / 512, fmt)
    assert codes.min() >= 0 and codes.max() <= 7 and scale.shape == (24, 3)
    assert zero is not None and torch.all(dequantize(codes, scale, zero, fmt)[:, 7] == 0)


def test_gptq_model_round_trips_with_true_size(tmp_path: Path) -> None:
    model = tiny_model()
    calib = [torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(s))
             for s in range(2)]
    names = list(quantizable_layers(model))
    formats = {n: ("int4g16a" if i % 3 else "int3g16s") for i, n in enumerate(names)}
    formats[names[-1]] = "keep"
    qm = gptq_quantize_model(model, formats, calib)
    rtn = quantize_model(model, formats)
    assert size_bytes(qm) == size_bytes(rtn) < size_bytes(model)
    path = save_quantized(qm, formats, tmp_path / "g.safetensors")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size == 8 + header + size_bytes(qm)
    loaded, fmts = load_quantized(path)
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert fmts == formats and torch.equal(loaded(idx)[0], qm(idx)[0])
        assert not torch.equal(qm(idx)[0], rtn(idx)[0])  # GPTQ did change the codes


def test_collect_hessians_matches_layer_inputs() -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(3))
    name = "transformer.h.0.attn.c_attn"
    seen: list[torch.Tensor] = []
    lin = quantizable_layers(model)[name]
    hook = lin.register_forward_hook(lambda _m, i, _o: seen.append(i[0].reshape(-1, 32)))
    with torch.no_grad():
        hs = collect_hessians(model, [idx], [name])
    hook.remove()
    x = seen[0].double()
    assert torch.allclose(hs[name], 2 * x.T @ x / x.shape[0], atol=1e-8)
    q = gptq_linear(lin, hs[name], QuantFormat(4, 16))
    assert q.weight_fp32().shape == lin.weight.shape


def test_gptq_keeps_a_pruning_mask_and_compensates_it() -> None:
    x = _correlated_inputs()
    w = 0.05 * torch.randn(64, 96, generator=torch.Generator().manual_seed(5))
    mask = torch.rand(64, 96, generator=torch.Generator().manual_seed(6)) > 0.5
    fmt = QuantFormat(4, 32)
    h = 2 * x.T @ x / x.shape[0]
    wg = dequantize(*gptq_quantize_weight(w, h, fmt, mask=mask), fmt)
    assert torch.all(wg[~mask] == 0)
    rtn = fake_quantize(w * mask, fmt)
    assert torch.all(rtn[~mask] == 0)  # the zero point codes 0 exactly
    assert _output_error(x, w, wg) < 0.95 * _output_error(x, w, rtn)

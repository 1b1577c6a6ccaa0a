from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _compressdata import VOCAB, tiny_model

from lmalloc.compress.quantize import (
    QuantFormat,
    QuantLinear,
    fake_quantize,
    pack_codes,
    quantizable_layers,
    quantize_model,
    size_bytes,
    unpack_codes,
)
from lmalloc.compress.store import load_quantized, save_quantized
from lmalloc.errors import UserError


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_round_trips_exactly(bits: int) -> None:
    n = 1001  # not a multiple of 8: the tail byte is partial
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, n), codes.to(torch.int16))


@pytest.mark.parametrize("symmetric", [False, True])
def test_error_shrinks_with_bits(symmetric: bool) -> None:
    w = torch.randn(48, 100, generator=torch.Generator().manual_seed(0))  # short last group
    errs = [float((w - fake_quantize(w, QuantFormat(b, 32, symmetric))).pow(2).mean())
            for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4 < errs[0]


def test_quant_linear_matches_fake_quantize_and_counts_bytes() -> None:
    lin = torch.nn.Linear(100, 24, bias=False)
    for fmt in (QuantFormat(3, 32), QuantFormat(4, 64, True), QuantFormat(2, 16)):
        q = QuantLinear.from_linear(lin, fmt)
        assert torch.allclose(q.weight_fp32(), fake_quantize(lin.weight, fmt))
        assert size_bytes(q) == fmt.nbytes(24, 100)


def test_bad_format_is_a_user_error() -> None:
    with pytest.raises(UserError, match="bits"):
        QuantFormat(5)
    with pytest.raises(UserError, match="format"):
        QuantFormat.parse("fp7")


def test_int8_logits_close_and_size_exact(tmp_path: Path) -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(1))
    layers = quantizable_layers(model)
    q8 = quantize_model(model, {n: "int8g64a" for n in layers})
    with torch.no_grad():
        ref, q = model(idx)[0], q8(idx)[0]
    assert (ref - q).abs().max() < 0.02 * ref.abs().max()
    fixed = size_bytes(model) - sum(m.weight.numel() * 4 for m in layers.values())
    expect = fixed + sum(QuantFormat(8, 64).nbytes(m.out_features, m.in_features)
                         for m in layers.values())
    assert size_bytes(q8) == expect < size_bytes(model)


def test_safetensors_size_and_reload(tmp_path: Path) -> None:
    model = tiny_model()
    layers = list(quantizable_layers(model))
    formats = {n: f for n, f in zip(layers, ["int2g16a", "int3g64s", "int4g32a", "keep"] * 4,
                                    strict=False)}
    qm = quantize_model(model, formats)
    path = save_quantized(qm, formats, tmp_path / "m.safetensors")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size == 8 + header + size_bytes(qm)
    loaded, fmts = load_quantized(path)
    assert fmts == formats
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], qm(idx)[0])


def test_tied_embedding_quantized_once_and_reloads(tmp_path: Path) -> None:
    from lmalloc.compress.quantize import TiedEmbedding, set_module

    model = tiny_model()
    layers = quantizable_layers(model, tied=True)
    assert "lm_head" in layers and "lm_head" not in quantizable_layers(model)
    formats = {n: "int8g16a" for n in layers}
    qm = quantize_model(model, formats)
    assert isinstance(qm.transformer.wte, TiedEmbedding)
    vocab, d = VOCAB, 32
    rest = size_bytes(quantize_model(model, {n: "int8g16a" for n in quantizable_layers(model)}))
    assert size_bytes(qm) == rest - 4 * vocab * d + QuantFormat(8, 16).nbytes(vocab, d)
    path = save_quantized(qm, formats, tmp_path / "t.safetensors")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size == 8 + header + size_bytes(qm)
    loaded, _ = load_quantized(path)
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, q = model(idx)[0], loaded(idx)[0]
        assert torch.equal(q, qm(idx)[0]) and (ref - q).abs().max() < 0.05 * ref.abs().max()
    set_module(qm, "lm_head", model.lm_head)  # restoring the head restores the embedding
    assert isinstance(qm.transformer.wte, torch.nn.Embedding)

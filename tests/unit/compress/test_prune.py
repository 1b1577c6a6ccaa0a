from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _compressdata import VOCAB, tiny_model

from lmalloc.compress.prune import (
    PruneSpec,
    magnitude_mask,
    n_m_mask,
    prune_model,
    sparsity,
    wanda_mask,
)
from lmalloc.compress.quantize import quantizable_layers, quantize_model, size_bytes
from lmalloc.compress.store import load_quantized, save_quantized
from lmalloc.data.shards import TokenData, write_token_splits
from lmalloc.errors import UserError
from lmalloc.evaluate.perplexity import evaluate_lm


def _calib(n: int = 2) -> list[torch.Tensor]:
    return [torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(s))
            for s in range(n)]


@pytest.mark.parametrize("text", ["2:4", "unstructured:0.5", "wanda:0.3", "heads:1",
                                  "neurons:0.25"])
def test_spec_round_trips(text: str) -> None:
    assert str(PruneSpec.parse(text)) == text


@pytest.mark.parametrize("text", ["3:4", "unstructured", "unstructured:1.5", "heads:0",
                                  "heads:1.5", "neurons:x", "channels:0.5", ""])
def test_bad_spec_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="--prune"):
        PruneSpec.parse(text)


def test_two_four_pattern_is_exact_on_a_model() -> None:
    model = tiny_model()
    masks = prune_model(model, PruneSpec.parse("2:4"), _calib())
    assert set(masks) == set(quantizable_layers(model))
    for lin in quantizable_layers(model).values():
        groups = (lin.weight != 0).reshape(lin.out_features, -1, 4).sum(-1)
        assert int(groups.max()) <= 2
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("kind", ["unstructured", "wanda"])
def test_unstructured_sparsity_is_as_asked(kind: str) -> None:
    model = tiny_model()
    prune_model(model, PruneSpec(kind, 0.4), _calib())
    assert sparsity(model) == pytest.approx(0.4, abs=0.01)


def test_wanda_beats_magnitude_with_skewed_input_norms() -> None:
    g = torch.Generator().manual_seed(0)
    scale = torch.exp(torch.linspace(-2.0, 2.0, 64))  # input norms spread over e^4
    x = torch.randn(512, 64, generator=g) * scale
    w = torch.randn(32, 64, generator=g)
    norms = x.norm(dim=0)

    def err(mask: torch.Tensor) -> float:
        return float((x @ (w - w * mask).T).pow(2).sum())

    wanda, mag = err(wanda_mask(w, norms, 0.5)), err(magnitude_mask(w, 0.5))
    assert wanda < 0.5 * mag, (wanda, mag)
    two_four_w, two_four_m = err(n_m_mask(w, norms)), err(n_m_mask(w, None))
    assert two_four_w < two_four_m


def _tiny_split(tmp_path: Path) -> TokenData:
    rng = np.random.default_rng(0)
    toks = rng.integers(0, VOCAB, 3000).astype(np.uint16)
    write_token_splits(tmp_path / "data", {"train": [toks[:2000]], "val": [toks[2000:]]},
                       vocab_size=VOCAB, eot_id=0, split_bytes={"train": 4000, "val": 2000})
    return TokenData(tmp_path / "data")


@pytest.mark.parametrize("text", ["heads:1", "neurons:0.5"])
def test_structured_pruning_shrinks_and_still_evaluates(text: str, tmp_path: Path) -> None:
    model = tiny_model()
    before = sum(p.numel() for p in model.parameters())
    prune_model(model, PruneSpec.parse(text), _calib())
    after = sum(p.numel() for p in model.parameters())
    d, hd, ff, blocks = 32, 16, 96, 2  # tiny_model: 2 heads of 16, SwiGLU width 96
    removed = 4 * d * hd * blocks if text == "heads:1" else 3 * d * (ff // 2) * blocks
    assert before - after == removed
    val = _tiny_split(tmp_path).split("val")
    res = evaluate_lm(model, val, seq_len=32, batch_size=4)
    assert np.isfinite(res["bpb"])
    formats = {n: "int8g16a" for n in quantizable_layers(model)}
    qm = quantize_model(model, formats)
    path = save_quantized(qm, formats, tmp_path / "p.safetensors")
    loaded, _ = load_quantized(path)
    assert size_bytes(loaded) == size_bytes(qm)
    assert evaluate_lm(loaded, val, seq_len=32, batch_size=4)["loss"] == \
        pytest.approx(evaluate_lm(qm, val, seq_len=32, batch_size=4)["loss"], abs=1e-6)


def test_too_many_heads_is_a_user_error() -> None:
    with pytest.raises(UserError, match="every head"):
        prune_model(tiny_model(), PruneSpec.parse("heads:2"), _calib())


def test_recovery_lowers_loss_and_keeps_sparsity(tiny_compress_run: Path) -> None:
    from lmalloc.compress.recover import recover
    from lmalloc.model.io import load_model

    model, cfg = load_model(tiny_compress_run / "final")
    val = TokenData(tiny_compress_run / "data").split("val")
    masks = prune_model(model, PruneSpec.parse("wanda:0.7"), _calib())
    before = evaluate_lm(model, val, seq_len=32, batch_size=8)["loss"]
    res = recover(model, cfg, tiny_compress_run / "data", tiny_compress_run / "rec", 20, masks,
                  lr=3e-3, batch_tokens=256)
    after = evaluate_lm(model, val, seq_len=32, batch_size=8)["loss"]
    assert res["steps"] == 20 and after < before - 0.05, (before, after)
    assert sparsity(model) == pytest.approx(0.7, abs=0.02)  # rounded per row

"""Perplexity and bits per byte on a model whose loss is known exactly (uniform logits)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmalloc.data.shards import TokenData, write_token_splits
from lmalloc.errors import UserError
from lmalloc.evaluate.perplexity import evaluate_lm, text_windows

V = 16


class Uniform(nn.Module):
    """Zero logits: every token costs exactly ln V nats."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = torch.zeros(*idx.shape, V) + 0 * self.w  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.view(-1, V), targets.view(-1))
        return logits, loss


@pytest.fixture
def data(tmp_path: Path) -> TokenData:
    rng = np.random.default_rng(0)
    write_token_splits(tmp_path, {"train": [rng.integers(0, V, 500)],
                                  "val": [rng.integers(0, V, 321), rng.integers(0, V, 100)]},
                       vocab_size=V, eot_id=0, split_bytes={"train": 2000, "val": 1684})
    return TokenData(tmp_path)


def test_split_bpb_formula(data: TokenData) -> None:
    split = data.split("val")
    r = evaluate_lm(Uniform(), split, seq_len=32, batch_size=4)
    assert r["loss"] == pytest.approx(math.log(V))
    assert r["perplexity"] == pytest.approx(V)
    # 10 windows of 32 in the 321-token shard, 3 in the 100-token shard
    assert r["tokens"] == 13 * 32
    expected_bytes = 1684 * r["tokens"] / 421
    assert r["bytes"] == pytest.approx(expected_bytes)
    assert r["bpb"] == pytest.approx(math.log(V) * r["tokens"] / math.log(2) / expected_bytes)
    assert r["loss_se"] == pytest.approx(0.0, abs=1e-6)  # every batch costs ln V exactly


class Alternating(Uniform):
    """The k-th forward pass reports a mean loss of exactly k nats."""

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.calls = getattr(self, "calls", 0) + 1
        logits = torch.zeros(*idx.shape, V) + 0 * self.w  # (B, T, V)
        loss = torch.tensor(float(self.calls))
        return logits, loss


def test_loss_standard_error_from_the_batches(data: TokenData) -> None:
    r = evaluate_lm(Alternating(), data.split("val"), seq_len=32, batch_size=4, max_tokens=96)
    # 96 tokens are three windows, all in one batch: no spread to measure
    assert r["loss_se"] is None
    r = evaluate_lm(Alternating(), data.split("val"), seq_len=32, batch_size=1, max_tokens=96)
    assert r["loss"] == pytest.approx(2.0)  # batches cost 1, 2, 3 nats
    assert r["loss_se"] == pytest.approx(1.0 / math.sqrt(3))  # sd 1 over 3 batches


def test_eval_token_cap(data: TokenData) -> None:
    r = evaluate_lm(Uniform(), data.split("val"), seq_len=32, batch_size=4, max_tokens=64)
    assert r["tokens"] == 64


def test_text_windows_cover_every_token_once() -> None:
    ids = np.arange(100)
    ys = np.concatenate([y.ravel() for _, y in text_windows(ids, 3, 16)])
    assert sorted(ys.tolist()) == list(range(1, 100))
    ranks = [np.concatenate([y.ravel() for _, y in text_windows(ids, 3, 16, r, 2)])
             for r in range(2)]
    assert sorted(np.concatenate(ranks).tolist()) == list(range(1, 100))


def test_text_file_uses_tokenizer_and_utf8_bytes(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "a", "b", "c", "é", "d"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    text = "a b c é d " * 30  # 150 words; é is 2 bytes
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    r = evaluate_lm(Uniform(), tmp_path / "t.txt", seq_len=16,
                    tokenizer_path=tmp_path / "tokenizer.json")
    assert r["tokens"] == 149
    assert r["bytes"] == pytest.approx(len(text.encode("utf-8")))
    assert r["bpb"] == pytest.approx(149 * math.log(V) / math.log(2) / 330)
    with pytest.raises(UserError, match="tokenizer"):
        evaluate_lm(Uniform(), tmp_path / "t.txt", seq_len=16)
    with pytest.raises(UserError, match="not found"):
        evaluate_lm(Uniform(), tmp_path / "nope.txt", seq_len=16,
                    tokenizer_path=tmp_path / "tokenizer.json")

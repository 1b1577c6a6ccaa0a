"""Checkpoint I/O: exact round trip of weights, AdamW state and RNG, without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lmalloc.errors import UserError
from lmalloc.train import checkpoint as ckpt


class Tied(nn.Module):
    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # shared storage, as in a tied GPT

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.wte(idx))))


def trained(seed: int = 0, steps: int = 3) -> tuple[Tied, torch.optim.AdamW]:
    torch.manual_seed(seed)
    m = Tied()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, foreach=True)
    for _ in range(steps):
        m(torch.randint(0, 11, (4, 5))).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return m, opt


def test_round_trip_is_exact(tmp_path: Path) -> None:
    m, opt = trained()
    torch.manual_seed(123)
    ckpt.write_checkpoint(tmp_path / "c", *ckpt.full_state(m, opt), {"step": 3, "tokens": 60})
    expected_next = torch.rand(3)
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    json.loads((tmp_path / "c" / "state.json").read_text())  # plain JSON, no pickle

    m2, opt2 = trained(seed=99, steps=1)
    state = ckpt.load_checkpoint(tmp_path / "c", m2, opt2)
    assert state["step"] == 3 and state["tokens"] == 60
    assert torch.equal(torch.rand(3), expected_next)  # RNG restored
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert m2.head.weight.data_ptr() == m2.wte.weight.data_ptr()  # still tied
    # the optimizer continues identically
    x = torch.randint(0, 11, (4, 5))
    for model, o in ((m, opt), (m2, opt2)):
        model(x).square().mean().backward()
        o.step()
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_other_shape_is_a_user_error(tmp_path: Path) -> None:
    m, opt = trained()
    ckpt.write_checkpoint(tmp_path / "c", *ckpt.full_state(m, opt), {"step": 1})
    with pytest.raises(UserError, match="another model shape"):
        ckpt.load_checkpoint(tmp_path / "c", Tied(vocab=13))


def test_missing_checkpoint(tmp_path: Path) -> None:
    assert not ckpt.has_checkpoint(tmp_path)
    with pytest.raises(UserError, match="not found"):
        ckpt.read_state(tmp_path)


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, opt = trained()
    ckpt.write_checkpoint(tmp_path / "c", *ckpt.full_state(m, opt), {"step": 1})

    def crash(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)  # dies after the weights are written
    with pytest.raises(OSError, match="disk full"):
        ckpt.write_checkpoint(tmp_path / "c", *ckpt.full_state(m, opt), {"step": 2})
    assert ckpt.read_state(tmp_path / "c")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c"]

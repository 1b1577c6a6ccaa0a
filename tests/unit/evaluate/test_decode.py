"""Greedy and beam decoding: beam 1 is greedy; a wider beam finds a likelier sequence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lmalloc.errors import UserError
from lmalloc.evaluate.decode import beam_search, greedy
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT

EOT, A, B, C = 0, 1, 2, 3


class Markov(nn.Module):
    """A bigram model: the next-token distribution depends on the last token only."""

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(seq_len=16)
        self.logp = nn.Parameter(torch.tensor(probs).log())  # (V, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: object = None) -> tuple[torch.Tensor, None]:
        return self.logp[idx], None  # (B, T, V)


def trap() -> Markov:
    """Greedy takes A (0.5) whose continuations are flat; B (0.4) ends almost surely."""
    return Markov([
        [0.25, 0.25, 0.25, 0.25],  # after EOT (unused)
        [0.30, 0.26, 0.24, 0.20],  # after A: no good way on
        [0.90, 0.04, 0.03, 0.03],  # after B: end
        [0.10, 0.50, 0.40, 0.00],  # after C (the prompt): A or B
    ])


def loglik(model: Markov, prompt: list[int], new: list[int]) -> float:
    seq = prompt + new
    return sum(float(model.logp.detach()[a, b]) for a, b in zip(seq[len(prompt) - 1:-1], new,
                                                       strict=True))


def test_beam_finds_a_likelier_sequence_than_greedy() -> None:
    model = trap()
    g = greedy(model, [C], max_new=4, eot_id=EOT)
    b = beam_search(model, [C], beam=3, max_new=4, eot_id=EOT, length_penalty=0.0)
    assert g == [A, EOT] and b == [B, EOT]
    assert loglik(model, [C], b) > loglik(model, [C], g) + 0.5
    assert math.isclose(loglik(model, [C], b), math.log(0.4 * 0.9), rel_tol=1e-6)


def test_beam_of_one_is_greedy_on_a_gpt() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, d_model=16, seq_len=24)).eval()
    gen = torch.Generator().manual_seed(1)
    for n_prompt in (1, 5, 30):  # 30 > seq_len: both slide their window
        prompt = torch.randint(1, 40, (n_prompt,), generator=gen).tolist()
        for eot in (None, int(greedy(model, prompt, 3, None)[1])):
            g = greedy(model, prompt, 12, eot)
            assert beam_search(model, prompt, 1, 12, eot) == g
            assert len(g) <= 12 and (eot is None or eot not in g[:-1])


def test_beam_stops_at_max_new_and_checks_arguments() -> None:
    model = trap()
    assert len(beam_search(model, [C], beam=2, max_new=1, eot_id=None)) == 1
    assert beam_search(model, [C], beam=2, max_new=0, eot_id=EOT) == []
    with pytest.raises(UserError, match="beam"):
        beam_search(model, [C], beam=0, max_new=3, eot_id=EOT)
    with pytest.raises(UserError, match="prompt"):
        beam_search(model, [], beam=2, max_new=3, eot_id=EOT)

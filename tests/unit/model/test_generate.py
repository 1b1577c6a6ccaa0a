"""Generation: KV-cache decoding equals recomputation; top-k/top-p filtering; arguments."""

from __future__ import annotations

import pytest
import torch

from lmalloc.errors import UserError
from lmalloc.evaluate.generate import filter_logits, generate
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    # untied, with a large init: a sharp, varied next-token distribution, so greedy paths
    # are not one repeated token and a cache bug would change them
    cfg = GPTConfig(vocab_size=50, n_layer=2, n_head=4, d_model=32, n_kv_head=2, seq_len=16,
                    tie_embeddings=False, init_std=0.5)
    return GPT(cfg)


def test_greedy_with_cache_equals_without(model: GPT) -> None:
    prompt = [3, 14, 15, 9]
    # 30 new tokens: crosses seq_len = 16, exercising the sliding-window fallback too
    cached = generate(model, prompt, 30, temperature=0.0)
    full = generate(model, prompt, 30, temperature=0.0, use_cache=False)
    assert cached == full
    assert len(cached) == 30 and len(set(cached)) > 1


def test_greedy_is_argmax_of_full_recompute(model: GPT) -> None:
    prompt = [1, 2, 3]
    out = generate(model, prompt, 5, temperature=0.0)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(5):
            seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
    assert out == seq[len(prompt):]


def test_top_k_1_equals_greedy(model: GPT) -> None:
    greedy = generate(model, [7, 8], 12, temperature=0.0)
    assert generate(model, [7, 8], 12, temperature=1.3, top_k=1, seed=5) == greedy


def test_seed_reproducible_and_eos(model: GPT) -> None:
    a = generate(model, [4], 12, temperature=1.0, seed=1)
    assert a == generate(model, [4], 12, temperature=1.0, seed=1)
    stop = a[3]
    b = generate(model, [4], 12, temperature=1.0, seed=1, eos_id=stop)
    assert b == a[: a.index(stop) + 1]
    assert model.training  # generate restores the mode it found


def test_top_p_on_known_distribution() -> None:
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p)).nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.5) == [0]  # the first token already reaches 0.5
    assert kept(0.6) == [0, 1]
    assert kept(0.75) == [0, 1]
    assert kept(0.8) == [0, 1, 2]
    assert kept(1.0) == [0, 1, 2, 3, 4]
    shuffled = logits[[3, 0, 4, 2, 1]]  # order must not matter
    assert torch.isfinite(filter_logits(shuffled, top_p=0.8)).tolist() == [
        False, True, False, True, True]
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [
        True, True, False, False, False]


def test_top_p_sampling_frequencies() -> None:
    class Fixed(torch.nn.Module):  # a "model" with a fixed next-token distribution
        def __init__(self) -> None:
            super().__init__()
            self.cfg = GPTConfig(vocab_size=5, n_layer=1, n_head=1, d_model=2, seq_len=8)
            self.w = torch.nn.Parameter(torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03]).log())

        def new_cache(self, batch_size: int) -> None:
            return None

        def forward(self, idx: torch.Tensor, cache: None = None) -> tuple[torch.Tensor, None]:
            return self.w.expand(idx.size(0), idx.size(1), 5), None

    out = generate(Fixed(), [0], 2000, top_p=0.6, seed=0, use_cache=False)
    frac0 = out.count(0) / len(out)
    assert set(out) == {0, 1}
    assert frac0 == pytest.approx(2 / 3, abs=0.04)  # 0.5 / (0.5 + 0.25)


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0),
                                dict(top_p=1.5), dict(max_new_tokens=-2)])
def test_bad_arguments(model: GPT, kw: dict[str, object]) -> None:
    args = {"max_new_tokens": 3, **kw}
    with pytest.raises(UserError, match=next(iter(kw))):
        generate(model, [1], **args)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="prompt"):
        generate(model, [], 3)

"""Log-likelihood scoring: sums match a direct computation, batching changes nothing, the
preferred label wins, acc_norm divides by characters, and prompts that cannot fit fail."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from _evaldata import write_sentiment_task
from torch import nn

from lmalloc.errors import UserError
from lmalloc.evaluate.scoring import (
    Encoder,
    build_context,
    evaluate_task,
    loglikelihoods,
    pick_demos,
)
from lmalloc.evaluate.tasks import Example, Task, load_task
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT


class Copier(nn.Module):
    """Logit +8 for every token already seen in the input: prefers answers the prompt holds."""

    def __init__(self, vocab: int, seq_len: int = 64) -> None:
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab, n_layer=1, n_head=1, d_model=8, seq_len=seq_len)
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, T = idx.shape
        seen = torch.zeros(B, T, self.cfg.vocab_size)  # (B, T, V)
        onehot = torch.nn.functional.one_hot(idx, self.cfg.vocab_size).float()  # (B, T, V)
        seen += 8.0 * (onehot.cumsum(dim=1) > 0).float()
        return seen + 0 * self.w, None


def _gpt(seq_len: int = 64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=300, n_layer=1, n_head=2, d_model=16, seq_len=seq_len))


def test_loglikelihood_matches_direct_sum_and_batching() -> None:
    model = _gpt().eval()
    reqs = [([5, 9, 2], [7, 7]), ([1], [3]), ([4, 8, 15, 16, 23], [42, 0, 1])]
    got = loglikelihoods(model, reqs, batch_size=2)
    for (ctx, cont), ll in zip(reqs, got, strict=True):
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids)[0].double(), -1)[0]  # (T, V)
        direct = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
        assert ll == pytest.approx(direct, abs=1e-4)
    assert loglikelihoods(model, reqs, batch_size=1) == pytest.approx(got, abs=1e-4)


def test_preferred_label_wins(tmp_path: Path, tokenizer: Any) -> None:
    task = load_task(write_sentiment_task(tmp_path))
    res = evaluate_task(Copier(300), tokenizer, task, eot_id=0)
    assert res["accuracy"] == 1.0 and res["macro_f1"] == 1.0
    assert res["confusion_matrix"] == [[2, 0], [0, 3]]
    assert res["majority"] == {"label": "neg", "accuracy": 2 / 5}  # train tie: first sorted
    assert (res["mode"], res["split"]) == ("zeroshot", "test")


def test_few_shot_demos_fixed_by_seed_and_dropped_when_too_long(tmp_path: Path,
                                                                tokenizer: Any) -> None:
    task = load_task(write_sentiment_task(tmp_path))
    assert pick_demos(task, 3, seed=1) == random.Random(1).sample(list(task.splits["train"]), 3)
    enc = Encoder(tokenizer, 0)
    ex = task.splits["test"][0]
    demos = pick_demos(task, 4, seed=0)
    ids, kept = build_context(task, ex, demos, enc, seq_len=64, answer_len=2, where="x")
    assert kept == 4 and ids[0] == 0
    assert enc.decode(ids[1:]).endswith("\n\nWord: positive. Answer:")
    one = len(enc.start() + enc(task.prompt(ex)))
    _, kept = build_context(task, ex, demos, enc, seq_len=one + 1, answer_len=2, where="x")
    assert kept == 0
    with pytest.raises(UserError, match="example 7.*context is 3"):
        build_context(task, ex, demos, enc, seq_len=3, answer_len=2, where="example 7")
    res = evaluate_task(Copier(300), tokenizer, task, shots=2, seed=3, eot_id=0)
    assert res["mode"] == "fewshot_2" and res["shots_used"] == 2


def test_prompt_longer_than_context_is_a_user_error(tmp_path: Path,
                                                    tokenizer: Any) -> None:
    task = load_task(write_sentiment_task(tmp_path))
    with pytest.raises(UserError, match="model's context is 4"):
        evaluate_task(Copier(300, seq_len=4), tokenizer, task)


def test_multiple_choice_normalises_by_characters(tokenizer: Any) -> None:
    class Uniform(Copier):
        def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
            return torch.zeros(*idx.shape, self.cfg.vocab_size) + 0 * self.w, None

    short, long_ = "a", "positive negative"
    enc = Encoder(tokenizer, None)
    n_short, n_long = len(enc(" " + short)), len(enc(" " + long_))
    assert n_long / len(long_) < n_short / len(short)  # per character, the long one is cheaper
    ex = Example("pick", label=long_, choices=(short, long_))
    task = Task("mc", "multiple_choice", "Q: {text}\nA:", splits={"test": [ex]})
    res = evaluate_task(Uniform(300), tokenizer, task)
    assert n_short < n_long  # raw log-likelihood (ln V per token) prefers the short choice
    assert (res["acc"], res["acc_norm"], res["norm"]) == (0.0, 1.0, "characters")
    assert math.isclose(res["n"], 1)


def test_generation_scores_greedy_output(tmp_path: Path, tokenizer: Any) -> None:
    exs = [Example("good film", target="good film"), Example("bad film", target="bad film")]
    task = Task("copy", "generation", "Say: {text}\nAgain:", splits={"test": exs})
    res = evaluate_task(_gpt(), tokenizer, task, eot_id=0)
    assert res["signature"].startswith("nrefs:1|") and 0 <= res["bleu"] <= 100
    assert {"rouge1", "rouge2", "rougeL"} <= set(res) and len(res["examples"]) == 2

"""Task examples as token rows: the masks, truncation, deterministic batches, the classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmalloc.errors import UserError
from lmalloc.evaluate.finetune import (
    ExampleSplit,
    GPTClassifier,
    encode_classification,
    encode_generation,
    predict_labels,
)
from lmalloc.evaluate.tasks import Example, Task
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT

WORDS = ["<eot>", "Q", ":", "A", "a", "b", "c", "d", "e", "f", "yes", "no"]
EOT = 0


@pytest.fixture
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<eot>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return t


def gen_task() -> Task:
    return Task(name="toy", kind="generation", template="Q : {text} A :",
                splits={"train": [Example("a b", target="c d e"), Example("f", target="a")]})


def cls_task() -> Task:
    return Task(name="yn", kind="classification", template="Q : {text} A :",
                labels=("no", "yes"), splits={"train": [Example("a b c", label="yes")]})


def test_generation_mask_is_minus_one_exactly_on_prompt_and_padding(tok) -> None:
    task = gen_task()
    x, y, cut = encode_generation(task, task.splits["train"], tok, seq_len=10, eot_id=EOT)
    ids = {w: i for i, w in enumerate(WORDS)}
    prompt = [ids[w] for w in "Q : a b A :".split()]  # 6 tokens
    target = [ids[w] for w in "c d e".split()] + [EOT]
    assert cut == 0
    assert x[0, :9].tolist() == prompt + target[:-1] and x[0, 9] == EOT  # pad
    # position t predicts token t + 1: the first 5 positions predict prompt tokens
    assert y[0].tolist() == [-1] * 5 + target + [-1]
    assert (y[1] >= 0).sum() == 2 and y[1, 4:6].tolist() == [ids["a"], EOT]
    assert ExampleSplit(x, y, 1).num_tokens == 6


def test_long_prompts_are_cut_on_the_left(tok) -> None:
    task = Task(name="long", kind="generation", template="{text} A :",
                splits={"train": [Example("a b c d e f a b c d e f", target="yes")]})
    x, y, cut = encode_generation(task, task.splits["train"], tok, seq_len=8, eot_id=EOT)
    assert cut == 1
    ids = {w: i for i, w in enumerate(WORDS)}
    # 2 target tokens (yes, eot) leave room for the last 7 prompt tokens; x drops the final eot
    assert x[0].tolist() == [ids[w] for w in "b c d e f A : yes".split()]
    assert y[0].tolist() == [-1] * 6 + [ids["yes"], EOT]
    long_cls = [Example("a b c d e f a b c", label="no")]
    xc, yc, cutc = encode_classification(cls_task(), long_cls, tok, seq_len=4, pad_id=EOT)
    assert cutc == 1 and xc[0].tolist() == [ids[w] for w in "b c A :".split()]
    assert yc[0].tolist() == [0, 3, -1, -1]


def test_classification_encoding_and_unknown_label(tok) -> None:
    task = cls_task()
    x, y, _ = encode_classification(task, task.splits["train"], tok, seq_len=10, pad_id=EOT)
    assert y[0, 0] == 1 and y[0, 1] == 6 and (y[0, 2:] == -1).all()
    assert (x[0, 7:] == EOT).all()
    with pytest.raises(UserError, match="maybe"):
        encode_classification(task, [Example("a", label="maybe")], tok, 10, EOT)


def test_batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch() -> None:
    n = 10
    x = np.arange(n * 4).reshape(n, 4)
    split = ExampleSplit(x, x.copy(), num_bytes=1)
    a = split.window_batch(3, 4, 4, seed=7)
    assert np.array_equal(a[0], split.window_batch(3, 4, 4, seed=7)[0])
    assert not np.array_equal(a[0], split.window_batch(3, 4, 4, seed=8)[0])
    rows = np.concatenate([split.window_batch(s, 5, 4, seed=1)[0][:, 0] for s in range(2)])
    assert sorted(rows // 4) == list(range(n))  # one epoch = every example once
    r0 = split.window_batch(0, 2, 4, seed=1, rank=0, world_size=2)[0]
    r1 = split.window_batch(0, 2, 4, seed=1, rank=1, world_size=2)[0]
    assert np.array_equal(np.concatenate([r0, r1]), split.window_batch(0, 4, 4, seed=1)[0])
    got = np.concatenate([b[0] for b in split.sequential_batches(3, 4)])
    assert np.array_equal(got, x)
    with pytest.raises(ValueError):
        split.window_batch(0, 2, 5, seed=0)


def test_classifier_reads_the_last_prompt_token_and_ignores_padding() -> None:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=12, n_layer=1, n_head=2, d_model=16, seq_len=8)).eval()
    clf = GPTClassifier(gpt, num_labels=3).eval()
    x = torch.tensor([[1, 2, 3, 0, 0, 0], [1, 2, 3, 9, 9, 9]])
    y = torch.full((2, 6), -1)
    y[:, 0], y[:, 1] = torch.tensor([2, 2]), torch.tensor([2, 2])
    logits, loss = clf(x, y)
    assert logits.shape == (2, 3) and loss is not None and torch.isfinite(loss)
    assert torch.allclose(logits[0], logits[1], atol=1e-6)  # causal: padding unseen
    hidden = gpt.transformer.ln_f  # the trunk is shared, not copied
    assert clf.gpt.transformer.ln_f is hidden
    lm_logits, _ = gpt(x)
    assert torch.allclose(clf.hidden(x) @ gpt.lm_head.weight.T, lm_logits, atol=1e-5)
    pred = predict_labels(clf, ExampleSplit(x.numpy(), y.numpy(), 1))
    assert pred.tolist() == logits.argmax(-1).tolist()

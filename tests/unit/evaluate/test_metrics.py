"""Metrics against known values: sacrebleu's and rouge-score's examples, a hand-done F1."""

from __future__ import annotations

import pytest

from lmalloc.errors import UserError
from lmalloc.evaluate.metrics import bleu, classification_metrics, majority_baseline, rouge


def test_macro_f1_by_hand() -> None:
    # a: P 2/2 R 2/3 F 0.8; b: P 1/2 R 1/2 F 0.5; c: P 1/2 R 1/1 F 2/3
    r = classification_metrics(list("aaabbc"), list("aabbcc"), ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_label_never_seen_counts_zero_in_macro_f1() -> None:
    r = classification_metrics(["a", "a"], ["a", "a"], ["a", "b"])
    assert r["macro_f1"] == pytest.approx(0.5)


def test_majority_baseline() -> None:
    assert majority_baseline(list("aab"), list("abbb")) == {"label": "a", "accuracy": 0.25}


def test_sacrebleu_readme_example() -> None:
    # sacrebleu README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 ...)
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    r = bleu(hyps, [list(x) for x in zip(*refs, strict=True)])
    assert r["bleu"] == pytest.approx(48.53, abs=0.005)
    assert [round(p, 1) for p in r["precisions"]] == [82.4, 50.0, 45.5, 37.5]
    assert r["signature"].startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_bleu_single_reference_and_length_mismatch() -> None:
    assert bleu(["a b c d e"], ["a b c d e"])["bleu"] == pytest.approx(100.0)
    with pytest.raises(UserError, match="pair up"):
        bleu(["a"], ["a", "b"])


def test_rouge_score_readme_example() -> None:
    # rouge-score README pair. Stemmed tokens: target "the quick brown fox jump over the lazi
    # dog" (9), prediction "the quick brown dog jump on the log" (8). ROUGE-1: 6 shared,
    # F = 2·6/(8+9); ROUGE-2: 2 shared bigrams, F = 2·2/(7+8); ROUGE-L: LCS 5, F = 2·5/(8+9).
    r = rouge(["The quick brown dog jumps on the log."],
              ["The quick brown fox jumps over the lazy dog"])
    assert r["rouge1"] == pytest.approx(12 / 17)
    assert r["rouge2"] == pytest.approx(4 / 15)
    assert r["rougeL"] == pytest.approx(10 / 17)

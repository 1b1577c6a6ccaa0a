"""Task metrics from the standard libraries: scikit-learn, sacrebleu, rouge-score.

Nothing here is hand-written scoring: accuracy, macro-F1 and the confusion matrix come from
``sklearn.metrics``; BLEU is sacrebleu's corpus BLEU (its signature string says exactly how it
was computed, so numbers are comparable across papers); ROUGE is Google's ``rouge-score``
(F-measure, averaged over examples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmalloc.errors import UserError


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str],
                           labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (mean of per-label F1, every label of ``labels`` counted, a label
    never predicted nor present scoring 0) and the confusion matrix (rows: true label, columns:
    predicted, in the order of ``labels``).

    >>> classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])["accuracy"]
    0.5
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    _check_lengths(y_true, y_pred)
    labels = list(labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": labels,
        "n": len(y_true),
    }


def majority_baseline(train_labels: Sequence[str], y_true: Sequence[str]) -> dict[str, Any]:
    """Accuracy of always answering the most frequent label of ``train_labels`` (ties: the
    first in sorted order) — the floor a classifier must beat."""
    from collections import Counter

    counts = Counter(train_labels)
    if not counts:
        raise UserError("majority baseline needs at least one training label")
    best = max(sorted(counts), key=lambda k: counts[k])
    hits = sum(1 for y in y_true if y == best)
    return {"label": best, "accuracy": hits / max(1, len(y_true))}


def bleu(hypotheses: Sequence[str],
         references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, exponential smoothing, mixed case).

    Args:
        hypotheses: one output per example.
        references: one reference per example, or a list of references per example (all
            examples the same number).

    Returns:
        ``{"bleu", "signature", "precisions", "bp", "sys_len", "ref_len"}``.
    """
    from sacrebleu.metrics.bleu import BLEU

    _check_lengths(references, hypotheses)
    per_example = [[r] if isinstance(r, str) else list(r) for r in references]
    n_refs = {len(r) for r in per_example}
    if len(n_refs) > 1:
        raise UserError(f"every example needs the same number of references, got {n_refs}")
    streams = [list(s) for s in zip(*per_example, strict=True)]  # sacrebleu: one list per ref
    metric = BLEU()
    score = metric.corpus_score(list(hypotheses), streams)
    return {"bleu": float(score.score), "signature": str(metric.get_signature()),
            "precisions": [float(p) for p in score.precisions], "bp": float(score.bp),
            "sys_len": int(score.sys_len), "ref_len": int(score.ref_len)}


def rouge(hypotheses: Sequence[str], references: Sequence[str],
          use_stemmer: bool = True) -> dict[str, Any]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (rouge-score; its tokenizer lowercases and
    keeps only ``[a-z0-9]`` runs, so non-ASCII letters split words; Porter stemming on by
    default, as in the summarization literature)."""
    from rouge_score import rouge_scorer

    _check_lengths(references, hypotheses)
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=use_stemmer)
    sums = dict.fromkeys(kinds, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for k in kinds:
            sums[k] += scores[k].fmeasure
    n = max(1, len(hypotheses))
    return {**{k: v / n for k, v in sums.items()}, "use_stemmer": use_stemmer}


def _check_lengths(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise UserError(f"{len(a)} references but {len(b)} predictions: they must pair up")
    if not a:
        raise UserError("no examples to score")


def generation_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """BLEU (with sacrebleu's signature) and ROUGE-1/2/L F of generated texts."""
    return {**bleu(hypotheses, references), **rouge(hypotheses, references)}

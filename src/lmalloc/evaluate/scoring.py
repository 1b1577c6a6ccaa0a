"""Zero- and few-shot evaluation of a language model on a task, by log-likelihood.

* **Classification**: the score of label ``y`` is ``sum_t log p(v_t | prompt, v_<t)`` over the
  tokens of its verbalizer ``v`` (e.g. " positive") after the prompt; the prediction is the
  label with the highest sum (unnormalised, as lm-evaluation-harness's ``acc``).
* **Multiple choice**: the same sum for ``delimiter + choice``; ``acc`` takes the raw argmax,
  ``acc_norm`` the argmax of ``sum / len(choice)`` with ``len`` the choice's length in
  **characters** (without the delimiter): lm-evaluation-harness's ``acc_norm`` convention.
* **Generation**: greedy decoding (:func:`lmalloc.evaluate.decode.greedy`) until end-of-text or
  a newline, then BLEU and ROUGE.

Context: every input starts with the end-of-text id when the tokenizer has one (a document
boundary, as the model saw in training); prompt and answer are tokenized separately, so the
answer's tokens are exactly its own. k-shot: k examples of the train split (the dev split when
there is no train split and dev is not evaluated), drawn once with ``random.Random(seed)`` and
shared by every evaluated example, are prepended as ``prompt + answer`` blocks joined by a blank
line. Length rule: the input (context + answer minus its last token) must fit in the model's
``seq_len``; demonstrations that do not fit are dropped oldest first (``shots_used`` reports the
mean kept); if even the zero-shot prompt and the answer do not fit, a
:class:`~lmalloc.errors.UserError` names the example.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from lmalloc.errors import UserError
from lmalloc.evaluate.tasks import Example, Task

SHOT_SEPARATOR = "\n\n"


class Encoder:
    """Text to token ids with the run's tokenizer (no special tokens added); ``eot`` prefix."""

    def __init__(self, tokenizer: Any, eot_id: int | None) -> None:
        self.tokenizer = tokenizer
        self.eot_id = eot_id

    def __call__(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def start(self) -> list[int]:
        return [] if self.eot_id is None else [self.eot_id]


@torch.no_grad()
def loglikelihoods(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                   batch_size: int = 16) -> list[float]:
    """``sum log p(continuation | context)`` (nats) for each ``(context_ids, continuation_ids)``.

    Rows are sorted by length and right-padded into batches; padding only follows the scored
    positions, and attention is causal, so it changes nothing.
    """
    if any(not ctx or not cont for ctx, cont in requests):
        raise ValueError("context and continuation need at least one token each")
    device = next(model.parameters()).device
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    out = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            rows = [list(requests[i][0]) + list(requests[i][1]) for i in order[b:b + batch_size]]
            width = max(len(r) for r in rows) - 1
            x = torch.zeros(len(rows), width, dtype=torch.long)  # (B, T)
            for j, r in enumerate(rows):
                x[j, : len(r) - 1] = torch.tensor(r[:-1])
            logits, _ = model(x.to(device))  # (B, T, V)
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
            for j, i in enumerate(order[b:b + batch_size]):
                ctx, cont = requests[i]
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
                out[i] = float(logp[j, pos, torch.tensor(list(cont))].double().sum())
    finally:
        model.train(was_training)
    return out


def pick_demos(task: Task, shots: int, seed: int) -> list[Example]:
    """The ``shots`` demonstrations (fixed by ``seed``), never from the evaluated split."""
    if shots == 0:
        return []
    if shots < 0:
        raise UserError(f"invalid shots = {shots}: expected a non-negative integer")
    pool_name = next((s for s in ("train", "dev") if s in task.splits
                      and s != task.eval_split_name()), None)
    if pool_name is None:
        raise UserError(f"task {task.name}: {shots}-shot needs a train split to draw from")
    pool = list(task.splits[pool_name])
    if shots > len(pool):
        raise UserError(f"task {task.name}: {shots} shots but the {pool_name} split has only "
                        f"{len(pool)} examples")
    return random.Random(seed).sample(pool, shots)


def build_context(task: Task, ex: Example, demos: Sequence[Example], enc: Encoder,
                  seq_len: int, answer_len: int, where: str) -> tuple[list[int], int]:
    """Token ids before the answer, and how many demonstrations fit (see the length rule)."""
    for k in range(len(demos), -1, -1):
        blocks = [task.prompt(d) + task.answer(d) for d in demos[len(demos) - k:]]
        ids = enc.start() + enc(SHOT_SEPARATOR.join([*blocks, task.prompt(ex)]))
        if len(ids) + answer_len - 1 <= seq_len:
            return ids, k
    raise UserError(
        f"{where}: the prompt and answer take {len(ids) + answer_len - 1} tokens but the "
        f"model's context is {seq_len}: shorten the template or use a longer-context model")


def _contexts(task: Task, examples: Sequence[Example], demos: Sequence[Example], enc: Encoder,
              seq_len: int, answers: Sequence[Sequence[list[int]]]
              ) -> tuple[list[list[int]], float]:
    ctxs, kept = [], 0
    for i, (ex, ans) in enumerate(zip(examples, answers, strict=True)):
        longest = max((len(a) for a in ans), default=1)
        where = f"task {task.name}, {task.eval_split_name()} example {i} ({ex.text[:40]!r})"
        ctx, k = build_context(task, ex, demos, enc, seq_len, longest, where)
        ctxs.append(ctx)
        kept += k
    return ctxs, kept / max(1, len(examples))


def _argmax_scores(model: Any, ctxs: Sequence[list[int]], answers: Sequence[Sequence[list[int]]],
                   batch_size: int) -> list[list[float]]:
    flat = [(c, a) for c, opts in zip(ctxs, answers, strict=True) for a in opts]
    ll = loglikelihoods(model, flat, batch_size)
    out, i = [], 0
    for opts in answers:
        out.append(ll[i:i + len(opts)])
        i += len(opts)
    return out


def _nonempty(ids: list[int], what: str) -> list[int]:
    if not ids:
        raise UserError(f"{what} encodes to no tokens")
    return ids


def score_classification(model: Any, enc: Encoder, task: Task, examples: Sequence[Example],
                         demos: Sequence[Example], batch_size: int = 16) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrix of label log-likelihood scoring."""
    from lmalloc.evaluate.metrics import classification_metrics

    verb = [_nonempty(enc(v), f"task {task.name} verbalizer {v!r}") for v in task.verbalizers]
    answers = [verb] * len(examples)
    ctxs, kept = _contexts(task, examples, demos, enc, model.cfg.seq_len, answers)
    scores = _argmax_scores(model, ctxs, answers, batch_size)
    preds = [task.labels[max(range(len(s)), key=s.__getitem__)] for s in scores]
    res = classification_metrics([str(e.label) for e in examples], preds, task.labels)
    return {**res, "shots_used": kept}


def score_multiple_choice(model: Any, enc: Encoder, task: Task, examples: Sequence[Example],
                          demos: Sequence[Example], batch_size: int = 16) -> dict[str, Any]:
    """``acc`` (raw log-likelihood) and ``acc_norm`` (per character of the choice)."""
    answers = [[_nonempty(enc(task.target_delimiter + c), f"choice {c!r}") for c in e.choices]
               for e in examples]
    ctxs, kept = _contexts(task, examples, demos, enc, model.cfg.seq_len, answers)
    scores = _argmax_scores(model, ctxs, answers, batch_size)
    hit = hit_norm = 0
    for ex, s in zip(examples, scores, strict=True):
        gold = ex.choices.index(str(ex.label))
        norm = [v / max(1, len(c)) for v, c in zip(s, ex.choices, strict=True)]
        hit += max(range(len(s)), key=s.__getitem__) == gold
        hit_norm += max(range(len(norm)), key=norm.__getitem__) == gold
    n = len(examples)
    return {"acc": hit / n, "acc_norm": hit_norm / n, "n": n, "shots_used": kept,
            "norm": "characters"}


def score_generation(model: Any, enc: Encoder, task: Task, examples: Sequence[Example],
                     demos: Sequence[Example], max_new_tokens: int = 64) -> dict[str, Any]:
    """Greedy outputs (cut at the first newline, stripped) scored with BLEU and ROUGE."""
    from lmalloc.evaluate.decode import greedy
    from lmalloc.evaluate.metrics import generation_metrics

    seq_len = model.cfg.seq_len
    hyps, kept = [], 0
    for i, ex in enumerate(examples):
        where = f"task {task.name}, {task.eval_split_name()} example {i} ({ex.text[:40]!r})"
        ctx, k = build_context(task, ex, demos, enc, seq_len, 1, where)
        kept += k
        new = greedy(model, ctx, min(max_new_tokens, seq_len - len(ctx) + 1), enc.eot_id)
        text = enc.decode([t for t in new if t != enc.eot_id])
        hyps.append(text.split("\n", 1)[0].strip())
    refs = [str(e.target) for e in examples]
    return {**generation_metrics(hyps, refs), "n": len(examples),
            "shots_used": kept / max(1, len(examples)), "decoding": "greedy",
            "examples": [{"text": e.text, "output": h, "reference": r}
                         for e, h, r in list(zip(examples, hyps, refs, strict=True))[:5]]}


def evaluate_task(model: Any, tokenizer: Any, task: Task, *, shots: int = 0, seed: int = 0,
                  eot_id: int | None = None, batch_size: int = 16) -> dict[str, Any]:
    """Score ``task``'s evaluation split zero-shot (``shots=0``) or k-shot.

    Args:
        model: a :class:`lmalloc.model.gpt.GPT` (``model(idx) -> (logits, _)``, ``cfg.seq_len``).
        tokenizer: a ``tokenizers.Tokenizer`` (the run's ``tokenizer.json``).
        eot_id: the end-of-text id, prepended to every input when given.

    Returns:
        The metrics of the task's kind, plus ``mode``, ``split``, ``shots``, ``seed`` and, for
        classification, the majority-class baseline.
    """
    from lmalloc.evaluate.metrics import majority_baseline

    split = task.eval_split_name()
    examples = list(task.splits[split])
    demos = pick_demos(task, shots, seed)
    enc = Encoder(tokenizer, eot_id)
    if task.kind == "classification":
        res = score_classification(model, enc, task, examples, demos, batch_size)
        train = task.splits.get("train", examples)
        res["majority"] = majority_baseline([str(e.label) for e in train],
                                            [str(e.label) for e in examples])
    elif task.kind == "multiple_choice":
        res = score_multiple_choice(model, enc, task, examples, demos, batch_size)
    else:
        res = score_generation(model, enc, task, examples, demos)
    mode = "zeroshot" if shots == 0 else f"fewshot_{shots}"
    return {**res, "task": task.name, "kind": task.kind, "mode": mode, "split": split,
            "shots": shots, "seed": seed}

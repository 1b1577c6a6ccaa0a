"""Deterministic decoding for generation tasks: greedy and beam search.

Greedy decoding is :func:`lmalloc.evaluate.generate.generate` at temperature 0 (KV cache,
sliding window); it is not re-implemented here. Beam search keeps the ``beam`` most likely
partial continuations; a hypothesis that emits the end-of-text id is finished and leaves the
beam (it keeps its slot among the ``beam`` best of that step, so the live beam may shrink; at
width 1 this is exactly greedy decoding). Each step recomputes the (at most ``seq_len``)
context of the live hypotheses in one batch, without a KV cache. Hypotheses are
ranked by ``sum log p / len ** length_penalty`` (the convention of Hugging Face's
``generate``; ``len`` counts the generated tokens), and the search stops once ``beam``
hypotheses have finished (HF's ``early_stopping=True``) or after ``max_new`` tokens.

Both functions take and return token ids for one prompt (batch of one) and return only the new
ids; a final end-of-text id is included, as ``generate`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmalloc.errors import invalid
from lmalloc.evaluate.generate import generate


def greedy(model: Any, prompt_ids: Sequence[int], max_new: int, eot_id: int | None) -> list[int]:
    """The most likely next token, step by step, until ``eot_id`` or ``max_new`` tokens.

    Uses the model's KV cache when it has one (``new_cache``), else recomputes the window.
    """
    return generate(model, list(prompt_ids), max_new, temperature=0.0, eos_id=eot_id,
                    use_cache=hasattr(model, "new_cache"))


def _normalised(logp: float, length: int, length_penalty: float) -> float:
    return float(logp / max(1, length) ** length_penalty)


@torch.no_grad()
def beam_search(model: Any, prompt_ids: Sequence[int], beam: int, max_new: int,
                eot_id: int | None, length_penalty: float = 1.0) -> list[int]:
    """The continuation of ``prompt_ids`` with the best length-normalised log-likelihood
    found by a beam of width ``beam``.

    Args:
        model: returns ``(logits (B, T, V), _)`` from ``model(idx)`` and has ``cfg.seq_len``
            (an :class:`lmalloc.model.gpt.GPT`).
        prompt_ids: the prompt (at least one id); only its last ``seq_len`` ids are seen.
        beam: beam width (1 gives greedy decoding).
        max_new: at most this many new tokens.
        eot_id: a hypothesis ends after emitting this id (``None``: none ends early).
        length_penalty: exponent of the length normalisation (0: raw log-likelihood, which
            favours short outputs; 1: per-token mean).

    Example:
        >>> ids = beam_search(model, [5, 9, 2], beam=4, max_new=20, eot_id=0)  # doctest: +SKIP
    """
    if not isinstance(beam, int) or beam < 1:
        raise invalid("beam", beam, "a positive integer")
    if not isinstance(max_new, int) or max_new < 0:
        raise invalid("max_new", max_new, "a non-negative integer")
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise invalid("prompt", prompt, "at least one token")
    device = next(model.parameters()).device
    seq_len = int(model.cfg.seq_len)
    was_training = model.training
    model.eval()
    try:
        alive: list[tuple[list[int], float]] = [([], 0.0)]  # (new ids, sum of log p)
        done: list[tuple[list[int], float]] = []
        for _ in range(max_new):
            alive, finished = _step(model, prompt, alive, beam, eot_id, seq_len, device)
            done.extend(finished)
            if len(done) >= beam or not alive:
                break
        pool = done + alive if len(done) < beam else done
        best = max(pool, key=lambda h: _normalised(h[1], len(h[0]), length_penalty))
        return best[0]
    finally:
        model.train(was_training)


def _step(model: Any, prompt: list[int], alive: list[tuple[list[int], float]], beam: int,
          eot_id: int | None, seq_len: int, device: torch.device,
          ) -> tuple[list[tuple[list[int], float]], list[tuple[list[int], float]]]:
    """Expand every live hypothesis by one token; keep the ``beam`` best candidates, split
    into those still going and those that just emitted ``eot_id``."""
    # every live hypothesis has the same length, so the rows batch without padding
    rows = torch.tensor([(prompt + ids)[-seq_len:] for ids, _ in alive], device=device)
    logits, _ = model(rows)  # (n_alive, T, V)
    logp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()  # (n_alive, V)
    scores = logp + torch.tensor([s for _, s in alive])[:, None]  # (n_alive, V)
    top = torch.topk(scores.flatten(), min(beam, scores.numel()))
    vocab = scores.size(1)
    keep: list[tuple[list[int], float]] = []
    finished: list[tuple[list[int], float]] = []
    for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        parent, token = divmod(int(flat), vocab)
        hyp = (alive[parent][0] + [token], float(score))
        (finished if token == eot_id else keep).append(hyp)
    return keep, finished

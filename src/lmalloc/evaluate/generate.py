"""Text generation from a trained GPT: greedy, temperature, top-k and nucleus (top-p) sampling.

Decoding uses the model's KV cache: the prompt is run once, then each new token costs one
position. When the sequence outgrows the model's context (``seq_len``), decoding falls back to
recomputing the last ``seq_len`` tokens per step (a sliding window), as nanoGPT does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from lmalloc.errors import invalid


def filter_logits(logits: torch.Tensor, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top ``top_k`` and outside the nucleus.

    The nucleus (Holtzman et al. 2020) is the smallest set of most probable tokens whose
    probability sums to at least ``top_p``; the token that crosses the threshold is kept.

    Args:
        logits: (..., V) unnormalised log-probabilities (already divided by the temperature).
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p  # mass before ≥ p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _check(max_new_tokens: int, temperature: float, top_k: int | None,
           top_p: float | None) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise invalid("max_new_tokens", max_new_tokens, "a non-negative integer")
    if not temperature >= 0:
        raise invalid("temperature", temperature, "a number ≥ 0 (0 means greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise invalid("top_k", top_k, "a positive integer")
    if top_p is not None and not 0 < top_p <= 1:
        raise invalid("top_p", top_p, "a number in (0, 1]")


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
          gen: torch.Generator) -> int:
    """The next token from the last position's logits (V,)."""
    if temperature == 0 or top_k == 1:
        return int(logits.argmax())
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def generate(model: Any, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_id: int | None = None,
             use_cache: bool = True) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` tokens; return the new ids only.

    Args:
        model: a :class:`lmalloc.model.gpt.GPT` (anything with its ``forward`` and
            ``new_cache``).
        prompt_ids: the prompt's token ids (at least one).
        temperature: softmax temperature; 0 means greedy decoding.
        top_k, top_p: keep only the k most likely tokens / the nucleus of mass p.
        seed: seed of the sampling generator (the same seed gives the same text).
        eos_id: stop after emitting this id (it is included in the result).
        use_cache: decode with the KV cache (off: recompute the whole window every step).
    """
    _check(max_new_tokens, temperature, top_k, top_p)
    ids = [int(t) for t in (prompt_ids.tolist() if torch.is_tensor(prompt_ids) else prompt_ids)]
    if not ids:
        raise invalid("prompt", ids, "at least one token")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(torch.seed() if seed is None else seed))
    seq_len = model.cfg.seq_len
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(1) if use_cache else None
        window = ids[-seq_len:]
        logits, _ = model(torch.tensor([window], device=device), cache=cache)  # (1, T, V)
        out: list[int] = []
        while len(out) < max_new_tokens:
            nxt = _pick(logits[0, -1], temperature, top_k, top_p, gen)
            out.append(nxt)
            ids.append(nxt)
            if nxt == eos_id or len(out) == max_new_tokens:
                break
            if cache is not None and cache.pos < cache.max_len:
                logits, _ = model(torch.tensor([[nxt]], device=device), cache=cache)  # (1,1,V)
            else:  # context full: positions shift, so recompute the sliding window
                cache = None
                logits, _ = model(torch.tensor([ids[-seq_len:]], device=device))
        return out
    finally:
        model.train(was_training)


def generate_text(run_dir: str | os.PathLike[str], prompt: str, max_new_tokens: int = 100,
                  temperature: float = 0.8, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None,
                  stop_at_eot: bool = True) -> dict[str, Any]:
    """Load the trained model of a run (``runs/<name>`` or its ``final/``) and its tokenizer,
    continue ``prompt``, and return ``{"prompt", "text", "tokens", "new_tokens", ...}``."""
    from tokenizers import Tokenizer

    from lmalloc.model.io import find_eot_id, find_tokenizer, load_model, model_dir

    model, cfg = load_model(run_dir)
    tok_path = find_tokenizer(run_dir)
    tokenizer = Tokenizer.from_file(str(tok_path))
    ids = tokenizer.encode(prompt).ids
    if not ids:
        raise invalid("prompt", prompt, "text that encodes to at least one token")
    eot = find_eot_id(tok_path) if stop_at_eot else None
    new = generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, seed=seed, eos_id=eot)
    text_ids = new[:-1] if new and new[-1] == eot else new
    return {
        "model": str(model_dir(run_dir)),
        "prompt": prompt,
        "text": tokenizer.decode(text_ids),
        "prompt_tokens": len(ids),
        "new_tokens": len(new),
        "stopped_at_eot": bool(new) and new[-1] == eot,
        "seed": seed,
    }

"""The byte-level BPE tokenizer (Hugging Face ``tokenizers``): train from an iterator or reuse.

Byte-level BPE (Radford et al. 2019, GPT-2) never meets an unknown character, so any corpus
round-trips exactly. The end-of-text token ``<|endoftext|>`` separates documents in the shards.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError

EOT = "<|endoftext|>"
# Below this share of the requested vocabulary the corpus cannot support the request: the
# trainer ran out of pairs to merge.
MIN_VOCAB_SHARE = 0.9


def train_tokenizer(
    docs: Iterable[str], vocab_size: int, min_frequency: int = 2, length: int | None = None
) -> Any:
    """Train byte-level BPE on ``docs`` (streamed); returns a ``tokenizers.Tokenizer``.

    Raises :class:`UserError` when the corpus supports far fewer tokens than ``vocab_size``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=length)
    got = tok.get_vocab_size()
    if got < MIN_VOCAB_SHARE * vocab_size:
        raise UserError(
            f"invalid vocab_size = {vocab_size}: this corpus supports only about {got} tokens "
            f"(BPE ran out of pairs seen at least {min_frequency} times); use --vocab-size "
            f"{got} or less, or a larger corpus"
        )
    return tok


def load_tokenizer(path: str | Path) -> Any:
    """Load a ``tokenizer.json``; it must know the end-of-text token."""
    from tokenizers import Tokenizer

    p = Path(path)
    if not p.is_file():
        raise UserError(f"tokenizer {str(path)!r} does not exist")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a plain Exception for a bad file
        raise UserError(f"{p} is not a valid tokenizer.json ({e})") from None
    if tok.token_to_id(EOT) is None:
        raise UserError(f"tokenizer {p} has no {EOT!r} token: documents could not be separated")
    return tok

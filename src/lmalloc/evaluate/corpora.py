"""Perplexity and bits per byte on standard held-out corpora: WikiText-2 and Penn Treebank.

Both ship in ``shared/data`` in their classic **tokenized** form (WikiText-2 v1 with ``<unk>``;
PTB with Mikolov's preprocessing: lowercase, ``N`` for numbers, ``<unk>``). The **test** file
is fed as is — its text, spaces around punctuation, ``<unk>`` markers and newlines included —
to the run's tokenizer and scored with :func:`lmalloc.evaluate.perplexity.evaluate_lm`
(non-overlapping windows of the model's ``seq_len``). Bits per byte are per UTF-8 byte of that
file. Token perplexity is per token of *the run's* tokenizer, so it is not comparable with the
word-level perplexities published for these sets (AWD-LSTM 65.8 on WikiText-2, 57.3 on PTB);
bits per byte are comparable across tokenizers on the same file.
"""

from __future__ import annotations

from pathlib import Path

from lmalloc.errors import UserError

CORPORA = {"wikitext2": Path("wikitext-2") / "test.txt", "ptb": Path("ptb") / "ptb.test.txt"}


def corpus_path(name_or_path: str | Path, data_root: Path | None = None) -> tuple[str, Path]:
    """``(source name, file)`` for a built-in corpus name or a text file's path."""
    from lmalloc.evaluate.tasks import DATA_ENV, default_data_root

    name = str(name_or_path)
    if name in CORPORA:
        root = Path(data_root) if data_root else default_data_root()
        path = root / CORPORA[name]
        if not path.is_file():
            raise UserError(f"corpus {name}: {path} not found; point ${DATA_ENV} (or "
                            "--data-root) at the shared data folder")
        return name, path
    path = Path(name)
    if not path.is_file():
        raise UserError(f"unknown corpus {name!r}: expected one of {sorted(CORPORA)} or the "
                        "path of a UTF-8 text file")
    return f"text:{path.name}", path

"""Helpers shared by the evaluation tests: a tiny tokenizer and a toy task on disk."""

from __future__ import annotations

from pathlib import Path

WORDS = "positive negative review sentiment word answer yes no the a film good bad"


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([f"{WORDS}. Word: positive. Answer: negative. " * 20], trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


SENTIMENT_TOML = """
[task]
name = "toy"
kind = "classification"
template = "Word: {text}. Answer:"
labels = ["neg", "pos"]
verbalizers = [" negative", " positive"]

[data]
format = "tsv"
text = "sentence"
label = "label"
label_map = { "0" = "neg", "1" = "pos" }

[data.splits]
train = "train.tsv"
test = "test.tsv"
"""


def write_sentiment_task(folder: Path, toml: str = SENTIMENT_TOML) -> Path:
    """A 2-label TSV task: the text is the label's word, so a copying model gets it right."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("positive", 1), ("negative", 0), ("negative", 0), ("positive", 1)]
    body = "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)
    (folder / "train.tsv").write_text(body)
    (folder / "test.tsv").write_text(body + "positive\t1\n")
    path = folder / "toy.toml"
    path.write_text(toml)
    return path

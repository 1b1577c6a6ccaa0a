"""Task files: the four data formats, JSONL task files, built-ins, and every bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _evaldata import SENTIMENT_TOML, write_sentiment_task

from lmalloc.errors import UserError
from lmalloc.evaluate.tasks import Example, Task, builtin_tasks, load_task


def test_tsv_task_with_label_map(tmp_path: Path) -> None:
    task = load_task(str(write_sentiment_task(tmp_path)))
    assert (task.name, task.kind, task.labels) == ("toy", "classification", ("neg", "pos"))
    assert task.eval_split_name() == "test"
    assert [e.label for e in task.splits["test"]] == ["pos", "neg", "neg", "pos", "pos"]
    ex = task.splits["train"][0]
    assert task.prompt(ex) == "Word: positive. Answer:"
    assert task.answer(ex) == " positive"


def test_verbalizers_default_to_delimiter_plus_label() -> None:
    task = Task("t", "classification", "{text}", labels=("a", "b"))
    assert task.verbalizers == (" a", " b")


def test_max_examples_and_data_root(tmp_path: Path) -> None:
    path = write_sentiment_task(tmp_path / "data")
    moved = tmp_path / "elsewhere.toml"
    moved.write_text(path.read_text())
    task = load_task(moved, data_root=tmp_path / "data", max_examples=2)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 2, "test": 2}


def test_jsonl_task_file_multiple_choice(tmp_path: Path) -> None:
    lines = [{"task": {"name": "mc", "kind": "multiple_choice", "template": "Q: {text}\nA:"}},
             {"split": "test", "text": "2+2", "choices": ["4", "5"], "label": 0},
             {"split": "test", "text": "3+3", "choices": ["5", "6"], "label": "6"}]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    task = load_task(path)
    assert task.splits["test"] == [Example("2+2", label="4", choices=("4", "5")),
                                   Example("3+3", label="6", choices=("5", "6"))]


def test_trec_and_parallel_formats(tmp_path: Path) -> None:
    (tmp_path / "t.label").write_bytes("NUM:dist How far ?\nHUM:ind Who is \xf0 ?\n"
                                       .encode("latin-1"))
    (tmp_path / "t.toml").write_text(
        '[task]\nname="q"\nkind="classification"\ntemplate="{text}"\nlabels=["HUM","NUM"]\n'
        '[data]\nformat="trec"\n[data.splits]\ntest="t.label"\n')
    task = load_task(tmp_path / "t.toml")
    assert [(e.text, e.label) for e in task.splits["test"]] == [("How far ?", "NUM"),
                                                                ("Who is \xf0 ?", "HUM")]
    (tmp_path / "a.en").write_text("one\ntwo\n")
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "p.toml").write_text(
        '[task]\nname="p"\nkind="generation"\ntemplate="{text} ="\n'
        '[data]\nformat="parallel"\n[data.splits]\ndev=["a.en","a.de"]\n')
    gen = load_task(tmp_path / "p.toml")
    assert gen.splits["dev"][1] == Example("two", target="zwei")
    assert gen.answer(gen.splits["dev"][1]) == " zwei"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace('kind = "classification"\n', ""), "task.kind"),
    (lambda s: s.replace('template = "Word: {text}. Answer:"', 'template = "no field"'),
     "task.template"),
    (lambda s: s.replace('"1" = "pos"', '"1" = "good"'), "absent from task.labels"),
    (lambda s: s.replace('labels = ["neg", "pos"]', 'labels = ["neg", "pos", "meh"]')
     .replace('" positive"]', '" positive", " meh"]'), "never occur"),
    (lambda s: s.replace('format = "tsv"', 'format = "csv"'), "data.format"),
    (lambda s: s.replace('verbalizers = [" negative", " positive"]', 'verbalizers = [" n"]'),
     "task.verbalizers"),
    (lambda s: s.replace('test = "test.tsv"', 'test = "nope.tsv"'), "nope.tsv"),
    (lambda s: s.replace("[data.splits]", "[data.splits]\nvalid = 'x.tsv'"), "data.splits.valid"),
])
def test_bad_task_files_name_the_field(tmp_path: Path, edit: Callable[[str], str],
                                       message: str) -> None:
    path = write_sentiment_task(tmp_path, edit(SENTIMENT_TOML))
    with pytest.raises(UserError, match=message) as err:
        load_task(path)
    assert str(path) in str(err.value) or "nope.tsv" in str(err.value)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    path = write_sentiment_task(tmp_path)
    (tmp_path / "test.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(UserError, match="split 'test' is empty"):
        load_task(path)


def test_unknown_builtin_lists_the_known() -> None:
    with pytest.raises(UserError, match="multi30k, sst2, trec"):
        load_task("glue-nope")


def test_builtin_task_files_ship_with_the_package() -> None:
    assert builtin_tasks() == ["multi30k", "sst2", "trec"]
    text = (Path(__file__).parents[3] / "pyproject.toml").read_text()
    assert '"evaluate/builtin/*.toml"' in text


@pytest.mark.shared_data
def test_builtin_tasks_on_shared_data(shared_data: Path) -> None:
    sst2 = load_task("sst2", shared_data)
    assert sst2.eval_split_name() == "dev" and len(sst2.splits["dev"]) == 872
    assert {e.label for e in sst2.splits["dev"]} == {"negative", "positive"}
    trec = load_task("trec", shared_data)
    assert (len(trec.splits["train"]), len(trec.splits["test"])) == (5452, 500)
    assert sum(e.label == "ABBR" for e in trec.splits["test"]) == 9  # SOURCE.md's count
    m30k = load_task("multi30k", shared_data, max_examples=3)
    assert m30k.eval_split_name() == "test" and m30k.splits["test"][0].target

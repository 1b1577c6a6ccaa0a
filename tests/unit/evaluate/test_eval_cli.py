"""``lmalloc eval --task/--corpus``: results merge into eval.json; bad input exits 2."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from _evaldata import write_sentiment_task

from lmalloc.testing.cli import invoke


def test_task_and_corpus_results_merge_into_eval_json(tiny_run: Path, tmp_path: Path) -> None:
    toml = write_sentiment_task(tmp_path / "task")
    (tiny_run / "eval.json").write_text(json.dumps({"perplexity": {"val": {"bpb": 1.0}}}))
    text = tmp_path / "corpus.txt"
    text.write_text("the good film. the bad film. " * 20)
    code, out = invoke("eval", "--run", str(tiny_run), "--task", str(toml), "--corpus",
                       str(text), "--json")
    assert code == 0, out
    printed = json.loads(out)
    assert printed["tasks"]["toy"]["zeroshot"]["n"] == 5
    other = tmp_path / "other.txt"
    other.write_text("a good review. " * 30)
    code, out = invoke("eval", "--run", str(tiny_run), "--task", str(toml), "--shots", "2",
                       "--text", str(other))  # --text joins the corpora
    assert code == 0 and "toy fewshot_2 on test (5 examples): accuracy" in out, out
    doc = json.loads((tiny_run / "eval.json").read_text())
    assert doc["perplexity"]["val"] == {"bpb": 1.0}  # kept
    assert set(doc["tasks"]["toy"]) == {"zeroshot", "fewshot_2"}
    assert set(doc["perplexity"]) == {"val", "text:corpus.txt", "text:other.txt"}
    corpus = doc["perplexity"]["text:corpus.txt"]
    assert corpus["bpb"] > 0 and corpus["seq_len"] == 64


def test_finetune_result_is_recorded(tiny_run: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def finetune_task(run_dir: Path, task: Any, *, seed: int = 0,
                      steps: int | None = None) -> dict[str, Any]:
        calls.append((run_dir, task.name, seed))
        return {"mode": "finetune", "metrics": {"test": {"accuracy": 0.75, "macro_f1": 0.7,
                                                         "n": 5}}}

    fake = types.ModuleType("lmalloc.evaluate.finetune")
    fake.finetune_task = finetune_task  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lmalloc.evaluate.finetune", fake)
    toml = write_sentiment_task(tmp_path / "task")
    code, out = invoke("eval", "--run", str(tiny_run), "--task", str(toml), "--finetune",
                       "--seed", "3")
    assert code == 0, out
    assert "toy finetune on test (5 examples): accuracy 0.7500, macro-F1 0.7000" in out
    assert calls == [(tiny_run, "toy", 3)]
    doc = json.loads((tiny_run / "eval.json").read_text())
    assert doc["tasks"]["toy"]["finetune"]["metrics"]["test"]["accuracy"] == 0.75


def test_bad_inputs_exit_2(tiny_run: Path, tmp_path: Path) -> None:
    code, msg = invoke("eval", "--run", str(tiny_run), "--task", "nope")
    assert code == 2 and "sst2" in msg
    code, msg = invoke("eval", "--run", str(tiny_run), "--corpus", "nope")
    assert code == 2 and "wikitext2" in msg
    toml = write_sentiment_task(tmp_path / "task")
    code, msg = invoke("eval", "--run", str(tiny_run), "--task", str(toml), "--shots", "9")
    assert code == 2 and "9 shots" in msg
    code, msg = invoke("eval", "--run", str(tiny_run), "--task", str(toml), "--shots", "1",
                       "--finetune")
    assert code == 2 and "exclude each other" in msg
    assert not (tiny_run / "eval.json").exists()


def test_generation_task_prints_the_sacrebleu_signature(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "s.en").write_text("good film\nbad film\n")
    (tmp_path / "s.de").write_text("guter film\nschlechter film\n")
    (tmp_path / "gen.toml").write_text(
        '[task]\nname="toygen"\nkind="generation"\ntemplate="English: {text}\\nGerman:"\n'
        '[data]\nformat="parallel"\n[data.splits]\ntest=["s.en","s.de"]\n')
    code, out = invoke("eval", "--run", str(tiny_run), "--task", str(tmp_path / "gen.toml"))
    assert code == 0, out
    assert "toygen zeroshot on test (2 examples): BLEU" in out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out.replace("\n", "")

"""``lmalloc run --recipe FILE --seq-len --batch-tokens --min-params``: the flags override the
file, a bad recipe is exit 2 before any run folder exists, and a good one is what the
exploration runs with (checked up to the search's first training, which is stopped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmalloc.cli import register
from lmalloc.errors import UserError
from lmalloc.plan.recipe import Recipe


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(register(), ["run", *args])


def _user_error(res: Any) -> str:
    """The message of the UserError the command ended with (``main`` prints it, exit 2)."""
    assert isinstance(res.exception, UserError), res.output
    return str(res.exception)


@pytest.mark.parametrize(("args", "names"), [
    (["--seq-len", "0"], "--seq-len: invalid seq_len = 0"),
    (["--seq-len", "100", "--batch-tokens", "2048"], "invalid batch_tokens = 2048"),
    (["--min-params", "-5"], "invalid min_params"),
    (["--vocab-size", "10"], "invalid vocab_size"),
])
def test_a_bad_recipe_is_refused_before_the_run_folder_exists(
        tmp_path: Path, args: list[str], names: str) -> None:
    res = _invoke("--run", str(tmp_path / "r"), "--hardware", "cpu", *args)
    assert names in _user_error(res)
    assert not (tmp_path / "r").exists()


def test_a_bad_recipe_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[model]\nn_layer = 2\n")  # a recipe of `lmalloc train`
    proc = subprocess.run(
        [sys.executable, "-c", "from lmalloc.cli import main; main()", "run", "--run",
         str(tmp_path / "r"), "--recipe", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    # the tables are named as text, not taken for markup
    assert "mine.toml has [model]/[train] tables" in " ".join(proc.stderr.split())
    path.write_text("[recipe]\nseq_len = 64\ncontext = 64\n")
    msg = _user_error(_invoke("--run", str(tmp_path / "r"), "--recipe", str(path)))
    assert "mine.toml" in msg and "unknown key(s) ['context']" in msg
    assert not (tmp_path / "r").exists()


def test_the_run_explores_with_the_users_recipe(tmp_path: Path, tiny_corpus_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def first_training(run: Any, proxy: dict[str, Any], recipe: Recipe, **kw: Any) -> None:
        seen.update(proxy=proxy, recipe=recipe, trial_tokens=kw["trial_tokens"])
        raise UserError("stopped at the search's first training")

    monkeypatch.setattr("lmalloc.run.explore.run_search_stage", first_training)
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[recipe]\nseq_len = 16\nbatch_tokens = 256\nmin_params = 3e3\n"
                      "vocab_size = 320\neval_tokens = 1024\n")
    root = tmp_path / "r"
    res = _invoke("--run", str(root), "--data", str(tiny_corpus_dir), "--budget", "4e10flops",
                  "--hardware", "cpu", "--recipe", str(recipe), "--seq-len", "32",
                  "--batch-tokens", "512")
    assert "stopped at the search's first training" in _user_error(res)
    r: Recipe = seen["recipe"]  # the flags over the file, the file over the defaults
    assert (r.seq_len, r.batch_tokens, r.min_params, r.eval_tokens) == (32, 512, 3e3, 1024)
    assert seen["proxy"]["seq_len"] == 32 and seen["trial_tokens"] % 512 == 0
    options = json.loads((root / "manifest.json").read_text())["run_options"]
    assert options["vocab_size"] == 320
    assert options["recipe"]["seq_len"] == 32 and options["recipe"]["min_params"] == 3e3
    split = json.loads((root / "split.json").read_text())
    assert split["min_params"] >= 3e3 / 4  # the floor, lowered at most twice
    assert {m["model"]["seq_len"] for m in split["ladder"]["runs"]} == {32}
    status = CliRunner().invoke(register(), ["status", "--run", str(root)])
    assert "context 32 tokens, batch 512 tokens, vocabulary 320" in " ".join(
        status.output.split())


def test_a_context_longer_than_the_data_is_refused_before_training(
        tmp_path: Path, tiny_corpus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def first_training(*_a: Any, **_kw: Any) -> None:
        raise AssertionError("the search started")

    monkeypatch.setattr("lmalloc.run.explore.run_search_stage", first_training)
    root = tmp_path / "r"  # the tiny corpus' val split is a few hundred tokens
    res = _invoke("--run", str(root), "--data", str(tiny_corpus_dir), "--budget", "4e10flops",
                  "--hardware", "cpu", "--vocab-size", "320", "--seq-len", "1024",
                  "--batch-tokens", "16384", "--min-params", "3e3")
    msg = _user_error(res)
    assert "the val split holds no sequence of seq_len 1024" in msg and "--seq-len" in msg
    assert not (root / "split.json").exists()

"""``prepare`` end to end on a tiny corpus: artifacts, reuse, determinism, bad input via CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmalloc.cli.app import register
from lmalloc.data import PrepareConfig, prepare
from lmalloc.data.shards import TokenData
from lmalloc.errors import UserError
from lmalloc.rundir import RunDir

CFG = PrepareConfig(vocab_size=320, min_chars=16, val_fraction=0.1, shard_tokens=2048)


def _counts(meta: dict) -> tuple:
    shards = {s: [(x["path"], x["tokens"], x["sha256"]) for x in v["shards"]]
              for s, v in meta["splits"].items()}
    return meta["counts"], meta["removed"], shards, meta["tokenizer"]["sha256"]


def test_prepare_tiny_corpus_loads_and_round_trips(tiny_corpus_dir: Path, tmp_path: Path):
    meta = prepare([tiny_corpus_dir], tmp_path / "data", CFG, progress=False)
    assert meta["reused"] is False and meta["counts"]["documents"] == 40
    assert meta["counts"]["documents_kept"] == 40
    data = TokenData(tmp_path / "data")
    train, val = data.split("train"), data.split("val")
    assert train.num_tokens > 0 and val.num_tokens > 0
    assert len(meta["splits"]["train"]["shards"]) > 1  # shard_tokens forces several
    assert data.vocab_size == 320 and data.dtype == np.dtype("<u2")
    # Nothing was removed, and cleaning only trims final newlines: bytes add up to the input.
    assert 0 < meta["counts"]["bytes"] - (train.num_bytes + val.num_bytes) <= 80
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(data.tokenizer_path))
    ids = np.concatenate([np.asarray(s) for s in val.shards])
    assert ids[-1] == data.eot_id
    first_doc = tok.decode(ids[: int(np.argmax(ids == data.eot_id))].tolist())
    corpus = "".join(p.read_text() for p in tiny_corpus_dir.rglob("*.*"))
    assert len(first_doc) > 100 and first_doc in corpus.replace("\\n", "\n")


def test_rerun_reuses_and_fresh_run_is_identical(tiny_corpus_dir: Path, tmp_path: Path):
    a = prepare([tiny_corpus_dir], tmp_path / "a", CFG, progress=False)
    again = prepare([tiny_corpus_dir], tmp_path / "a", CFG, progress=False)
    assert again["reused"] is True and again["content_key"] == a["content_key"]
    b = prepare([tiny_corpus_dir], tmp_path / "b", CFG, progress=False)
    assert b["reused"] is False and _counts(a) == _counts(b)
    other = prepare([tiny_corpus_dir], tmp_path / "a", PrepareConfig(
        vocab_size=300, min_chars=16, val_fraction=0.1), progress=False)
    assert other["reused"] is False


def test_duplicates_and_filters_counted(tiny_corpus_dir: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(tiny_corpus_dir, src)
    shutil.copy(src / "doc00.txt", src / "zcopy.txt")
    text = (src / "doc02.txt").read_text()
    (src / "znear.txt").write_text(text.replace(".", "!", 1))
    (src / "zshort.txt").write_text("tiny")
    (src / "zbin.txt").write_bytes(b"\x00\x01\x02" * 100)
    meta = prepare([src], tmp_path / "d", CFG, progress=False)
    r = meta["removed"]
    assert (r["exact_duplicate"], r["near_duplicate"], r["min_chars"]) == (1, 1, 1)
    assert meta["counts"]["binary_files"] == 1 and meta["counts"]["documents_kept"] == 40


def test_reuse_given_tokenizer(tiny_corpus_dir: Path, tmp_path: Path):
    a = prepare([tiny_corpus_dir], tmp_path / "a", CFG, progress=False)
    cfg = PrepareConfig(tokenizer=str(tmp_path / "a" / "tokenizer.json"), min_chars=16,
                        val_fraction=0.1, shard_tokens=2048)
    b = prepare([tiny_corpus_dir], tmp_path / "b", cfg, progress=False)
    assert b["tokenizer"]["trained"] is False and _counts(a)[2] == _counts(b)[2]


def test_library_errors_leave_no_output(tmp_path: Path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty corpus"):
        prepare([tmp_path / "empty.txt"], tmp_path / "out", CFG, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def _cli(args: list[str]) -> object:
    return CliRunner().invoke(register(), args)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "empty corpus"),
        ("binary", "every source file is binary"),
        ("filtered", "removed by filter: min_chars"),
        ("jsonl", "JSONL lines are malformed"),
        ("vocab", "invalid vocab_size = 60000"),
        ("badarg", "invalid jaccard_threshold"),
    ],
)
def test_cli_bad_input_exit_2_and_no_output(tmp_path: Path, setup: str, message: str):
    src = tmp_path / "src"
    src.mkdir()
    extra: list[str] = []
    if setup == "empty":
        (src / "a.txt").write_text("\n\n")
    elif setup == "binary":
        (src / "a.txt").write_bytes(b"\x00" * 50)
    elif setup == "filtered":
        (src / "a.txt").write_text("too short")
    elif setup == "jsonl":
        (src / "a.jsonl").write_text('{"text": "fine text here, long enough"}\n{bad\n{bad\n')
    elif setup == "vocab":
        for i in range(3):
            (src / f"{i}.txt").write_text(f"a small corpus, number {i}, with few words\n")
        extra = ["--vocab-size", "60000"]
    elif setup == "badarg":
        (src / "a.txt").write_text("x" * 100)
        extra = ["--jaccard-threshold", "1.5"]
    target = src / "nope" if setup == "missing" else src
    run = tmp_path / "run"
    res = _cli(["prepare", str(target), "--run", str(run), "--json", *extra])
    # CliRunner calls the Typer app, not main(): the UserError that main() turns into exit
    # code 2 arrives here as the exception (the subprocess test below checks main()).
    assert isinstance(res.exception, UserError), res.output
    assert res.exception.exit_code == 2 and message in str(res.exception)
    assert not (run / "data").exists()
    assert not [p for p in run.glob(".data*")] if run.exists() else True


def test_cli_main_exits_2_with_one_paragraph(tmp_path: Path):
    cmd = [sys.executable, "-c", "from lmalloc.cli import main; main()", "prepare",
           str(tmp_path / "missing"), "--run", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "data").exists()


def test_cli_prepare_records_stage_and_ledger(tiny_corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["prepare", str(tiny_corpus_dir), "--run", str(run), "--vocab-size", "320",
            "--min-chars", "16", "--val-fraction", "0.1", "--json"]
    res = _cli(args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["reused"] is False and (run / "data" / "data.json").exists()
    rd = RunDir(run)
    m = rd.manifest()
    assert m["stages"]["prepare"]["content_key"] == out["content_key"]
    assert rd.spent("prepare")["flops"] == 0 and rd.spent("prepare")["seconds"] > 0
    rd.verify_artifact("data/data.json")
    assert json.loads(_cli(args).output)["reused"] is True
    assert len(rd.manifest()["ledger"]) == 2


def test_changed_source_is_not_reused(tiny_corpus_dir: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(tiny_corpus_dir, src)
    a = prepare([src], tmp_path / "d", CFG, progress=False)
    f = src / "doc00.txt"
    f.write_text(f.read_text() + "\nOne more line of text.\n")
    b = prepare([src], tmp_path / "d", CFG, progress=False)
    assert b["reused"] is False and b["content_key"] != a["content_key"]


def test_jsonl_and_parquet_counts_in_data_json(tiny_corpus_dir: Path, tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    src.mkdir()
    docs = [json.loads(line)["text"] for line in (tiny_corpus_dir / "docs.jsonl").open()]
    lines = [json.dumps({"body": d}) for d in docs] + ["{broken"]
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"body": [p.read_text() for p in sorted(
        tiny_corpus_dir.glob("*.txt"))]}), src / "b.parquet")
    cfg = PrepareConfig(vocab_size=300, min_chars=16, text_field="body", parquet_column="body")
    meta = prepare([src], tmp_path / "d", cfg, progress=False)
    on_disk = json.loads((tmp_path / "d" / "data.json").read_text())
    c = on_disk["counts"]
    assert (c["jsonl_lines"], c["malformed_jsonl"], c["files"]) == (20, 1, 2)
    assert c["documents"] == 19 + 10 and c["documents_kept"] == 29
    assert on_disk["content_key"] == meta["content_key"]
    assert on_disk["config"]["text_field"] == "body"

"""Hostile input: every case ends in success or a :class:`UserError` (CLI: exit 0 or 2), never
a traceback, and a failed write leaves no partial output behind.

Each test counts its cases with the ``tally`` fixture (see conftest.py for the JSON report).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmalloc.errors import UserError
from lmalloc.testing.cli import invoke

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn, *args, **kwargs) -> str:
    try:
        fn(*args, **kwargs)
    except UserError as e:
        assert str(e), "a UserError must carry a message"
        return "user_error"
    return "ok"


def _leftovers(folder: Path) -> list[Path]:
    """Temporary or half-written files an atomic write would have removed."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name
            or ".old-" in p.name]


# -- (a) budget strings --------------------------------------------------------------------
_UNITS = ["", "s", "m", "h", "d", "flops", "GB", "MB", "TB", "x", "e", "$", "%", ":", "=",
          ",", "mem=", "deploy=", "H100", "8xH100:", "cpu", "nan", "inf", "-", "1e999", " "]
_term = st.one_of(
    st.builds("{}{}".format, st.floats(-1e3, 1e30, allow_nan=False).map(lambda v: f"{v:g}"),
              st.sampled_from(["s", "m", "h", "d", "flops", "", "GB"])),
    st.builds("{}={}GB".format, st.sampled_from(["mem", "deploy", "ram"]),
              st.integers(-1, 10**6)),
    st.builds("{}x{}:{}h".format, st.integers(-1, 10**5), st.sampled_from(["H100", "cpu",
                                                                          "A100", "nope"]),
              st.integers(0, 10**9)),
    st.builds("${}".format, st.integers(-1, 10**9)),
)
budget_text = st.one_of(
    st.lists(_term, min_size=1, max_size=3).map(",".join),
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(_UNITS), st.integers(-10**30, 10**30).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr)),
             max_size=8).map("".join),
)


@FAST
@given(budget_text)
def test_budget_strings_parse_or_raise_user_error(tally, text: str):
    from lmalloc.cost.budget import parse_budget

    def parse() -> None:
        b = parse_budget(text, hardware="cpu")
        for v in (b.seconds, b.flops, b.memory_bytes, b.deploy_bytes):
            assert v is None or (math.isfinite(v) and v > 0), (text, b)

    tally("budget_strings", _outcome(parse))


# -- (b) search spaces ---------------------------------------------------------------------
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
param_spec = st.dictionaries(
    st.sampled_from(["type", "low", "high", "log", "step", "choices", "grid", "when",
                     "default", "junk"]),
    st.one_of(scalar, st.sampled_from(["float", "int", "categorical", "bool", "x"]),
              st.lists(scalar, max_size=4), st.dictionaries(st.text(max_size=4), scalar,
                                                            max_size=2)),
    max_size=6,
)
plausible_param = st.one_of(
    st.builds(lambda t, lo, span, log: {"type": t, "low": lo, "high": lo + span, "log": log},
              st.sampled_from(["float", "int"]), st.integers(1, 64), st.integers(0, 64),
              st.booleans()),
    st.fixed_dictionaries({"type": st.sampled_from(["float", "int"]),
                           "low": st.one_of(st.integers(-5, 100), st.floats(-1, 1e3)),
                           "high": st.one_of(st.integers(-5, 100), st.floats(-1, 1e3))},
                          optional={"log": st.booleans(), "step": scalar,
                                    "grid": st.lists(scalar, max_size=3)}),
    st.fixed_dictionaries({"type": st.just("categorical"),
                           "choices": st.lists(scalar, max_size=4)},
                          optional={"when": st.dictionaries(st.sampled_from(["lr", "width"]),
                                                            scalar, max_size=1)}),
)
space_dict = st.one_of(
    st.builds(lambda p, g: {"params": p, "grid_points": g},
              st.dictionaries(st.sampled_from(["lr", "batch", "width"]), plausible_param,
                              min_size=1, max_size=3), st.integers(-1, 6)),
    st.dictionaries(st.sampled_from(["params", "grid_points", "other"]),
                    st.one_of(scalar, st.dictionaries(st.text(max_size=6), param_spec,
                                                      max_size=4)), max_size=3),
    st.builds(lambda p, g: {"params": p, "grid_points": g},
              st.dictionaries(st.sampled_from(["lr", "batch", "width", ""]), param_spec,
                              max_size=3), st.one_of(st.integers(-3, 10), scalar)),
)


@FAST
@given(space_dict)
def test_search_space_dicts_build_or_raise_user_error(tally, d):
    from lmalloc.search.space import SearchSpace

    tally("search_spaces", _outcome(SearchSpace.from_dict, d))


@FEW
@given(st.binary(max_size=300))
def test_binary_runs_tables_exit_2(tally, raw: bytes):
    with tempfile.TemporaryDirectory() as d:
        runs = Path(d) / "runs.csv"
        runs.write_bytes(raw)
        code, output = invoke("fit", str(runs), "--bootstrap", "2", "--json")
        assert code in (0, 2) and "Traceback" not in output, output
    tally("runs_tables", "ok" if code == 0 else "user_error")


@FEW
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_search_space_files_load_or_raise_user_error(tally, raw: bytes):
    from lmalloc.search.space import SearchSpace

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "space.toml"
        p.write_bytes(raw)
        tally("search_space_files", _outcome(SearchSpace.from_toml, p))


# -- (c) runs tables for `lmalloc fit` -----------------------------------------------------
cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.integers(-10**30, 10**30).map(str), st.just(""),
                 st.sampled_from(["nan", "NaN", "-inf", "1e400", "abc", '"', "0"]))
header = st.lists(st.sampled_from(["N", "D", "loss", "C", "n", "LOSS", "x", "", "N"]),
                  max_size=5)


good_row = st.tuples(st.sampled_from([1e6, 3e6, 1e7, 3e7]), st.sampled_from([2e7, 6e7, 2e8]),
                    st.floats(1.8, 6)).map(lambda r: [repr(v) for v in r])
header = st.one_of(st.just(["N", "D", "loss"]), header)


@FEW
@given(header, st.one_of(st.lists(good_row, min_size=8, max_size=12,
                                  unique_by=lambda r: (r[0], r[1])),
                         st.lists(st.one_of(good_row, st.lists(cell, max_size=5)), max_size=12)),
       st.sampled_from(["parametric", "isoflop", "both"]))
def test_runs_tables_fit_or_exit_2(tally, cols, rows, method):
    text = ",".join(cols) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    with tempfile.TemporaryDirectory() as d:
        runs, out = Path(d) / "runs.csv", Path(d) / "out" / "laws.json"
        runs.write_text(text)
        code, output = invoke("fit", str(runs), "--method", method, "--bootstrap", "3",
                              "--target-flops", "1e20", "--out", str(out), "--json")
        assert code in (0, 2), output
        assert "Traceback" not in output
        if code == 2:
            assert not out.exists(), "a failed fit must not leave laws.json"
        assert not _leftovers(Path(d))
    tally("runs_tables", "ok" if code == 0 else "user_error")


# -- (d) task files ------------------------------------------------------------------------
task_value = st.one_of(scalar, st.lists(scalar, max_size=3),
                       st.sampled_from(["classification", "generation", "multiple_choice",
                                        "{text}", "{0}", "{", "}", "{text!r:>{x}}", "tsv",
                                        "jsonl", "trec", "parallel", "../../etc/passwd"]))
task_table = st.dictionaries(
    st.sampled_from(["name", "kind", "template", "labels", "verbalizers", "target_delimiter",
                     "eval_split", "x"]), task_value, max_size=8)
data_table = st.dictionaries(
    st.sampled_from(["format", "text", "label", "target", "label_map", "header", "encoding",
                     "splits", "fine"]),
    st.one_of(task_value, st.dictionaries(st.sampled_from(["train", "dev", "test", "x"]),
                                          st.sampled_from(["d.tsv", "missing.tsv", "d.jsonl",
                                                           "/etc/hostname", ""]), max_size=3)),
    max_size=6)


def _toml(value) -> str:
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)


example_line = st.one_of(
    st.fixed_dictionaries({"split": st.just("test"), "text": st.text(max_size=20),
                           "label": st.sampled_from(["0", "1"]), "target": st.just("x"),
                           "choices": st.just(["0", "1"])}),
    st.fixed_dictionaries({"split": st.sampled_from(["test", "dev", "train", "x"]),
                           "text": st.one_of(st.text(max_size=20), scalar)},
                          optional={"label": st.one_of(st.sampled_from(["0", "1", "2"]), scalar),
                                    "target": scalar,
                                    "choices": st.lists(st.text(max_size=5), max_size=3)}),
    st.text(max_size=30),
)
plausible_task = st.fixed_dictionaries(
    {"name": st.just("t"),
     "kind": st.sampled_from(["classification", "generation", "multiple_choice"]),
     "template": st.sampled_from(["Q: {text}\nA:", "{text}", "{text} {0}", "{text}{"])},
    optional={"labels": st.one_of(st.just(["0", "1"]),
                                  st.lists(st.sampled_from(["0", "1", "2", ""]), max_size=3)),
              "target_delimiter": st.text(max_size=2),
              "eval_split": st.sampled_from(["test", "dev", "nope"])},
)


@FAST
@given(plausible_task, st.lists(example_line, max_size=6))
def test_inline_jsonl_tasks_load_or_raise_user_error(tally, task, lines):
    import json

    from lmalloc.evaluate.tasks import load_task

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "task.jsonl"
        body = [json.dumps({"task": task})] + [
            x if isinstance(x, str) else json.dumps(x, default=str) for x in lines]
        p.write_text("\n".join(body) + "\n")

        def load() -> None:
            t = load_task(p)
            for ex in t.splits.get(t.eval_split_name(), []):
                t.prompt(ex)
                t.answer(ex)

        tally("task_files", _outcome(load))


@FAST
@given(task_table, data_table, st.booleans())
def test_task_files_load_or_raise_user_error(tally, task, data, jsonl):
    from lmalloc.evaluate.tasks import load_task

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "d.tsv").write_text("text\tlabel\nhello\t0\n\xff\t1\n")
        (root / "d.jsonl").write_text('{"text": "a", "label": 1}\nnot json\n')
        if jsonl:
            import json

            p = root / "task.jsonl"
            p.write_text(json.dumps({"task": task}, default=str) + "\n"
                         + '{"split": "test", "text": "x", "label": "0"}\n')
        else:
            p = root / "task.toml"
            lines = ["[task]"] + [f"{k} = {_toml(v)}" for k, v in task.items() if v is not None]
            lines += ["[data]"] + [f"{k} = {_toml(v)}" for k, v in data.items()
                                   if v is not None]
            p.write_text("\n".join(lines) + "\n")

        def load() -> None:
            t = load_task(p)
            for ex in t.splits.get(t.eval_split_name(), [])[:3]:
                t.prompt(ex)

        tally("task_files", _outcome(load))


# -- (e) CLI arguments ---------------------------------------------------------------------
opt_value = st.one_of(st.integers(0, 30).map(str), st.floats(0.01, 1e6).map(repr),
                      st.sampled_from(["isoflop", "both", "non_embedding", "total", "0.5",
                                       "a100-40gb", "bf16", "fp32", "2048", "1e9"]),
                      st.sampled_from(["", "-1", "0", "nan", "inf", "-inf", "1e999", "abc",
                                       "8xH100", "none", "--json", "1.5", "99999999999999999"]),
                      st.text(max_size=10).filter(lambda s: not s.startswith("-")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["params", "tokens", "hardware", "seq-len", "batch-tokens", "precision",
                        "vocab-size", "price"]), opt_value, opt_value, opt_value)
def test_estimate_arguments_exit_0_or_2(tally, opt, value, params, tokens):
    args = {"params": params or "1e6", "tokens": tokens or "1e8", "hardware": "cpu", opt: value}
    argv = ["estimate", "--json"] + [x for k, v in args.items() for x in (f"--{k}", v)]
    code, output = invoke(*argv)
    assert code in (0, 2), (argv, output)
    assert "Traceback" not in output
    tally("cli_estimate", "ok" if code == 0 else "user_error")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["target-flops", "method", "bootstrap", "seed", "level",
                        "flops-per-token-per-param", "param-convention"]), opt_value)
def test_fit_arguments_exit_0_or_2(tally, opt, value):
    with tempfile.TemporaryDirectory() as d:
        runs = Path(d) / "runs.csv"
        rows = [(n, dd, 1.7 + 400 / n**0.34 + 410 / dd**0.28)
                for n in (1e6, 3e6, 1e7, 3e7) for dd in (2e7, 6e7, 2e8)]
        runs.write_text("N,D,loss\n" + "".join(f"{n},{dd},{loss}\n" for n, dd, loss in rows))
        out = Path(d) / "laws.json"
        argv = ["fit", str(runs), "--bootstrap", "2", "--out", str(out), f"--{opt}", value,
                "--json"]
        code, output = invoke(*argv)
        assert code in (0, 2), (argv, output)
        assert "Traceback" not in output
        assert code == 0 or not out.exists()
        assert not _leftovers(Path(d))
    tally("cli_fit", "ok" if code == 0 else "user_error")


@pytest.mark.parametrize(("opt", "value"), [("bootstrap", "99999999999999999"),
                                            ("bootstrap", "100001"), ("seed", "-1")])
def test_fit_rejects_out_of_range_bootstrap_and_seed(tmp_path, opt, value):
    """Regression: numpy raised ValueError (exit 1) on these; a huge count would also hang."""
    runs = tmp_path / "runs.csv"
    runs.write_text("N,D,loss\n1e6,2e7,3.1\n3e6,2e7,2.9\n1e7,6e7,2.6\n3e7,2e8,2.4\n")
    code, output = invoke("fit", str(runs), f"--{opt}", value)
    assert code == 2 and opt in output


def test_non_utf8_search_space_file_is_a_user_error(tmp_path):
    """Regression: a binary space file raised UnicodeDecodeError (exit 1)."""
    from lmalloc.search.space import SearchSpace

    p = tmp_path / "space.toml"
    p.write_bytes(b"\x80[params]\n")
    with pytest.raises(UserError, match="not valid TOML"):
        SearchSpace.from_toml(p)


@pytest.mark.parametrize("spec", [
    {"type": "categorical", "choices": None},
    {"type": "categorical", "choices": 3},
    {"type": "float", "low": 0, "high": 1, "grid": [None]},
    {"type": "float", "low": 0, "high": 1, "grid": 0.5},
    {"type": "float", "low": 0, "high": 1, "step": "a"},
])
def test_malformed_param_specs_are_user_errors(spec):
    """Regression: these raised TypeError (exit 1) inside SearchSpace.from_dict."""
    from lmalloc.search.space import SearchSpace

    with pytest.raises(UserError, match=r"params\.lr\."):
        SearchSpace.from_dict({"params": {"lr": spec}})


# -- (f) fuzzed corpora for `lmalloc prepare` ------------------------------------------------
_FIXED_CORPORA = {
    "zero_length": b"",
    "binary": bytes(range(256)) * 64,
    "invalid_utf8": b"valid start \xff\xfe\xc3\x28 broken \xed\xa0\x80 surrogate\n" * 200,
    "huge_single_line": (b"word " * 300_000).strip(),
    "nul_bytes": b"text\x00with\x00nuls " * 2000,
    "only_newlines": b"\n" * 10_000,
}


def _base_corpus() -> bytes:
    """40 distinct documents of pseudo-words, so a hostile file beside them can still pass."""
    import json
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(400)]
    docs = [" ".join(rng.choice(words) for _ in range(120)) for _ in range(40)]
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


BASE = _base_corpus()


def _prepare_case(tmp: Path, files: dict[str, bytes], with_base: bool = True) -> str:
    from lmalloc.data import PrepareConfig, prepare

    src = tmp / "corpus"
    src.mkdir(parents=True)
    if with_base:
        (src / "base.jsonl").write_bytes(BASE)
    for name, raw in files.items():
        (src / name).write_bytes(raw)
    out = tmp / "data"
    cfg = PrepareConfig(vocab_size=300, min_chars=16, val_fraction=0.1, shard_tokens=2048,
                        dedup_near=False)
    outcome = _outcome(prepare, [src], out, cfg, progress=False)
    if outcome == "user_error":
        assert not out.exists(), "a failed prepare must leave no data folder"
    else:
        from lmalloc.data.shards import TokenData

        data = TokenData(out)
        data.split("train")
    assert not _leftovers(tmp), _leftovers(tmp)
    return outcome


@pytest.mark.parametrize("kind", sorted(_FIXED_CORPORA))
def test_fuzzed_corpus_prepares_or_raises_user_error(tally, tmp_path, kind):
    files = {f"{kind}.txt": _FIXED_CORPORA[kind]}
    if kind != "zero_length":
        files["also.jsonl"] = b'{"text": "\xff\xfe"}\n{"nope": 1}\nnot json\n'
    tally("prepare_corpora", _prepare_case(tmp_path / "a", files, with_base=False))
    tally("prepare_corpora", _prepare_case(tmp_path / "b", files, with_base=True))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=4000), st.sampled_from(["a.txt", "a.jsonl", "a.md"]))
def test_random_bytes_corpus_prepares_or_raises_user_error(tally, raw, name):
    with tempfile.TemporaryDirectory() as d:
        tally("prepare_corpora", _prepare_case(Path(d), {name: raw}, with_base=raw[:1] > b"\x7f"))


def test_real_entry_point_prints_no_traceback(tmp_path):
    """One subprocess check of the installed entry point (``main`` maps UserError to exit 2)."""
    import subprocess
    import sys

    bad = tmp_path / "runs.csv"
    bad.write_bytes(b"\x80\xff\x00,N\n")
    exe = Path(sys.executable).with_name("lmalloc")
    proc = subprocess.run([str(exe), "fit", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "runs.csv" in proc.stdout + proc.stderr


# Cases hypothesis found (regressions): a time budget whose FLOPs overflow, and non-finite
# token counts that reached the time model's arithmetic.
def test_an_overflowing_budget_is_a_user_error():
    from lmalloc.cost.budget import parse_budget

    with pytest.raises(UserError, match="overflows"):
        parse_budget("749040E290M", hardware="cpu")


@pytest.mark.parametrize("tokens", ["inf", "nan", "-inf"])
def test_non_finite_tokens_exit_2(tokens):
    code, output = invoke("estimate", "--params", "1", "--tokens", tokens, "--hardware", "cpu")
    assert code == 2 and "positive finite" in output and "Traceback" not in output

"""The user's recipe: a TOML file read key by key, checked before any work, and part of the
run's options (a rerun with another recipe in a folder that trained is refused, naming the
field)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmalloc.errors import UserError
from lmalloc.plan.recipe import RECIPE_FILE_KEYS, Recipe, read_recipe_file
from lmalloc.run.context import RunContext, RunOptions
from lmalloc.run.pipeline import check_options
from lmalloc.rundir import RunDir

SHIPPED = Path(__file__).parents[3] / "src" / "lmalloc" / "configs" / "recipe_gpu_1024.toml"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_a_recipe_table_and_top_level_keys_read_alike(tmp_path: Path) -> None:
    table = read_recipe_file(_file(tmp_path, "[recipe]\nseq_len = 256\nmin_params = 3e5\n"
                                             "lr = 1\nvocab_size = 8192\n"))
    top = read_recipe_file(_file(tmp_path, "seq_len = 256\nmin_params = 3e5\nlr = 1\n"
                                           "vocab_size = 8192\n"))
    assert table == top == {"seq_len": 256, "min_params": 3e5, "lr": 1.0, "vocab_size": 8192}
    assert isinstance(table["lr"], float)  # a whole number where a float is expected


@pytest.mark.parametrize(("text", "names"), [
    ("[recipe]\nseq_lenn = 64\n", "seq_lenn"),
    ("seq_len = 64.5\n", "seq_len"),
    ("batch_tokens = \"2048\"\n", "batch_tokens"),
    ("evals_per_run = true\n", "evals_per_run"),
    ("min_params = \"1e6\"\n", "min_params"),
    ("[recipe]\nseed = 3\n", "--seed"),
    ("[model]\nn_layer = 2\n[train]\nlr = 1e-3\n", "lmalloc train"),
    ("seq_len = 64\n[recipe]\nbatch_tokens = 1024\n", "seq_len"),
    ("seq_len = [64\n", "not valid TOML"),
])
def test_bad_recipe_files_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(UserError, match=names):
        read_recipe_file(_file(tmp_path, text))


def test_a_missing_recipe_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="recipe not found"):
        read_recipe_file(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="recipe not found"):
        read_recipe_file(tmp_path)  # a folder


@pytest.mark.parametrize(("changes", "names"), [
    ({"seq_len": 0}, "seq_len"),
    ({"batch_tokens": -2048}, "batch_tokens"),
    ({"micro_batch": 0}, "micro_batch"),
    ({"eval_tokens": 0}, "eval_tokens"),
    ({"evals_per_run": 0}, "evals_per_run"),
    ({"min_params": 0.0}, "min_params"),
    ({"min_params": float("inf")}, "min_params"),
    ({"lr": -1e-3}, "lr"),
    ({"cooldown_frac": 0.0}, "cooldown_frac"),  # the ladder branches its cooldowns
    ({"warmup": -1.0}, "warmup"),  # the trainer's own check
    # the batch rule: 2048 tokens are not whole micro-batches of 16 x 100 tokens
    ({"seq_len": 100, "batch_tokens": 2048}, "batch_tokens = 2048.*1600, 3200"),
    ({"seq_len": 4096, "batch_tokens": 2048}, "smaller than one sequence"),
])
def test_check_refuses_what_no_exploration_can_run(changes: dict[str, object],
                                                   names: str) -> None:
    with pytest.raises(UserError, match=names):
        Recipe(**changes).check()  # type: ignore[arg-type]


def test_the_cpu_default_and_the_shipped_gpu_recipe_pass() -> None:
    assert Recipe().check() == Recipe()
    gpu = read_recipe_file(SHIPPED)
    assert set(gpu) <= set(RECIPE_FILE_KEYS)
    vocab = gpu.pop("vocab_size")
    r = Recipe(**gpu).check()
    assert (r.seq_len, r.batch_tokens, vocab) == (1024, 524288, 32768)
    assert r.min_params > Recipe().min_params


def _trained_run(tmp_path: Path, options: RunOptions) -> RunContext:
    ctx = RunContext(tmp_path / "r", options)
    check_options(ctx)  # stores the options
    ctx.run.charge("search", 1e9, 2.0)  # something trained
    return ctx


def test_a_rerun_with_another_recipe_is_refused_naming_the_field(tmp_path: Path) -> None:
    mine = Recipe(seq_len=128, batch_tokens=2048)
    _trained_run(tmp_path, RunOptions(recipe=mine))
    other = RunOptions(recipe=Recipe(seq_len=64, batch_tokens=1024))
    with pytest.raises(UserError, match="other options") as e:
        check_options(RunContext(tmp_path / "r", other))
    msg = str(e.value)
    assert "recipe.seq_len 128 → 64" in msg and "recipe.batch_tokens 2048 → 1024" in msg
    assert "recipe.min_params" not in msg and "--budget" not in msg  # only what changed
    check_options(RunContext(tmp_path / "r", RunOptions(recipe=mine)))  # the same: resumes
    assert RunDir(tmp_path / "r").manifest()["run_options"]["recipe"]["seq_len"] == 128


def test_another_recipe_before_any_training_replaces_the_options(tmp_path: Path) -> None:
    said: list[str] = []
    ctx = RunContext(tmp_path / "r", RunOptions(recipe=Recipe(min_params=2e5)))
    check_options(ctx)
    ctx.run.charge("prepare", 0.0, 1.0)  # prepared, nothing trained
    check_options(RunContext(tmp_path / "r", RunOptions(recipe=Recipe(min_params=4e5)),
                             say=said.append))
    assert "recipe.min_params 200000.0 → 400000.0" in said[0]
    assert RunDir(tmp_path / "r").manifest()["run_options"]["recipe"]["min_params"] == 4e5


_VALUES = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                    st.booleans(), st.text(max_size=5))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*RECIPE_FILE_KEYS, "seed", "bogus"]), _VALUES,
                       max_size=6))
def test_any_recipe_file_reads_and_checks_or_is_a_user_error(doc: dict[str, object]) -> None:
    import json
    import tempfile

    def toml(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.toml"
        path.write_text("[recipe]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in doc.items()))
        try:
            settings_ = read_recipe_file(path)
            settings_.pop("vocab_size", None)
            Recipe(**settings_).check()
        except UserError:
            pass


def test_run_pipeline_checks_the_recipe_before_the_folder_exists(tmp_path: Path) -> None:
    from lmalloc.run import run_pipeline

    with pytest.raises(UserError, match="invalid batch_tokens = 2048"):
        run_pipeline(tmp_path / "r", RunOptions(recipe=Recipe(seq_len=100, batch_tokens=2048)))
    assert not (tmp_path / "r").exists()

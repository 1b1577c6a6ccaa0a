"""Each report figure: a real PNG and SVG from run-shaped inputs, None when its stage is absent."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.report import artifacts, plots
from lmalloc.report.artifacts import load_run, read_metrics

pytest.importorskip("matplotlib")

FIGURES = [plots.plot_training_curves, plots.plot_isoflop, plots.plot_scaling_fit,
           plots.plot_predicted_vs_achieved, plots.plot_search_history, plots.plot_importances,
           plots.plot_ledger]


@pytest.mark.parametrize("draw", FIGURES, ids=lambda f: f.__name__)
def test_figure_writes_png_and_svg(draw: Callable[..., plots.Plot | None], finished: Path,
                                   tmp_path: Path) -> None:
    plot = draw(load_run(finished), tmp_path / "plots")
    assert plot is not None
    assert plot.png.read_bytes().startswith(b"\x89PNG") and plot.png.stat().st_size > 2000
    assert b"<svg" in plot.svg.read_bytes()[:2000]
    assert plot.png.parent == tmp_path / "plots" and plot.caption and plot.alt


@pytest.mark.parametrize("draw", [*FIGURES, plots.plot_compression], ids=lambda f: f.__name__)
def test_figure_is_none_before_its_stage(draw: Callable[..., plots.Plot | None],
                                         run_factory: Callable[..., Path],
                                         tmp_path: Path) -> None:
    root = run_factory("split")
    (root / "manifest.json").write_text('{"stages": {}, "ledger": []}')
    assert draw(load_run(root), tmp_path / "plots") is None
    assert not (tmp_path / "plots").exists()


def test_compression_front_from_results(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    for name, size, bpb in (("int8", 4e6, 1.31), ("int4", 2e6, 1.36), ("bad", 3e6, 1.5)):
        (root / "compressed" / name).mkdir(parents=True)
        (root / "compressed" / name / "result.json").write_text(
            f'{{"size_bytes": {size}, "bpb": {bpb}}}')
    plot = plots.plot_compression(load_run(root), tmp_path / "p")
    assert plot is not None and plot.png.stat().st_size > 2000


def test_importances_skip_reasons(run_factory: Callable[..., Path]) -> None:
    few = plots.read_studies(load_run(run_factory("search", n_complete=19)))
    assert "at least 20 completed trials" in (plots.importance_skip_reason(few) or "")
    assert "the study has 19" in (plots.importance_skip_reason(few) or "")
    single = plots.read_studies(load_run(run_factory("ladder", params=("lr",))))
    assert "hyperparameters" in (plots.importance_skip_reason(single) or "")
    assert plots.importance_skip_reason([]) == "no search study in this run yet"


def test_study_reads_with_optunas_own_api(finished: Path) -> None:
    """What optuna-dashboard opens: the storage URL and study names, through Optuna itself."""
    import optuna

    url = load_run(finished).study_url
    assert url is not None and url.startswith("sqlite:///")
    summaries = optuna.get_all_study_summaries(url)
    assert [s.study_name for s in summaries] == ["explore"]
    study = optuna.load_study(study_name="explore", storage=url)
    assert len(study.trials) == 23 and study.best_value < 3.0


def test_frontier_matches_the_closed_form(finished: Path) -> None:
    import numpy as np

    from lmalloc.scaling import compute_optimal

    fit = load_run(finished).fit
    best, lo, hi = plots.frontier(fit, np.array([1e13]))
    assert best[0] == pytest.approx(compute_optimal(fit, 1e13).loss.value, rel=1e-9)
    assert lo[0] <= best[0] <= hi[0]


def test_metrics_partial_last_line_skipped_corrupt_middle_raises(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"kind": "train", "loss": 3.0}\n{"kind": "tra')
    assert read_metrics(p) == [{"kind": "train", "loss": 3.0}]
    p.write_text('{"kind": "tra\n{"kind": "train", "loss": 3.0}\n')
    with pytest.raises(UserError, match="line 1"):
        read_metrics(p)


@pytest.mark.parametrize("name", ["plan.json", "laws.json", "search.json", "eval.json"])
def test_corrupt_artifact_is_a_user_error_naming_it(name: str, finished: Path,
                                                    tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    (root / name).write_text('{"truncated": ')
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        artifacts.load_run(root)


def test_corrupt_ladder_csv_names_file_and_line(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    with (root / "ladder.csv").open("a") as f:
        f.write("1e5,abc,1e12,3.0,1.2,0,1,completed\n")
    with pytest.raises(UserError, match=r"ladder\.csv.*line 11"):
        load_run(root)


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path)

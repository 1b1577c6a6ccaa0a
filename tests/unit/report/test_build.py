"""report.html from a run directory: the summary, a section per stage, notes for what is missing;
``lmalloc report`` / ``lmalloc status``; the pipeline's report stage never loses a run."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmalloc.errors import UserError
from lmalloc.report.artifacts import load_run, run_status
from lmalloc.report.build import build_report, summary_text

pytest.importorskip("matplotlib")

SECTIONS = ("budget", "prepare", "search", "scaling", "plan", "final", "evaluation",
            "compression")


def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built(finished: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished synthetic run with its report built once (building takes seconds)."""
    root = tmp_path_factory.mktemp("built") / "r"
    shutil.copytree(finished, root)
    build_report(root)
    return root


def test_finished_run_report(built: Path) -> None:
    root = built
    path, plots = root / "report.html", {p.stem: p for p in (root / "plots").glob("*.png")}
    assert path == root / "report.html"
    html = _html(path)
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in html
    assert len(plots) == 7 and "compression" not in plots  # compression: not built yet
    assert html.count("<img ") == 7
    assert all(p.with_suffix(".svg").is_file() for p in plots.values())
    summary = re.search(r'<p class="summary">(.*?)</p>', html, re.S)
    assert summary is not None
    text = summary.group(1)
    assert "400k-parameter model on 6M tokens" in text
    assert "achieved 3.45 nats/token on its own validation sample" in text
    assert "inside the interval" in text and "1 × local (cpu)" in text
    assert "sst2.accuracy" in html and "0.71" in html  # eval.json's tasks, generically
    assert "Compression: not run yet." in html
    assert "optuna-dashboard --host 127.0.0.1 sqlite:///" in html


def test_verdicts_come_first(built: Path) -> None:
    html = _html(built / "report.html")
    block = re.search(r'<section id="verdicts" class="verdicts"><h2>Verdicts</h2><ul>(.*?)</ul>',
                      html, re.S)
    assert block is not None
    assert html.index('id="verdicts"') < html.index('class="summary"') < html.index("<nav")
    items = re.findall(r'<li class="v-(\w+)"><b>\1</b>([^:]+):', block.group(1))
    assert {topic for _, topic in items} >= {"fit", "search", "interval", "budget", "losses"}
    assert {sev for sev, _ in items} == {"ok"}  # the synthetic run is healthy
    assert "own validation loss (nats/token)" in html  # the final run's table, labelled
    assert "on the whole split (perplexity.val: every val token" in html


def test_degenerate_fit_is_a_problem_at_the_top(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    laws = json.loads((root / "laws.json").read_text())
    laws["degeneracy"] = {"degenerate": True, "remedy": "map", "degenerate_after": True,
                          "prior": {"mean": {"alpha": 0.34, "beta": 0.28}, "sd": 0.15,
                                    "source": "Hoffmann et al. 2022"},
                          "problems": [{"code": "exponent", "message": "alpha = 10 is outside "
                                        "[0.02, 2.0]"}],
                          "problems_after": [{"code": "vanished", "message": "A vanished"}]}
    (root / "laws.json").write_text(json.dumps(laws))
    (root / "study.db").unlink()  # fewer figures: faster
    html = _html(build_report(root))
    first = re.search(r'<section id="verdicts".*?<li class="v-(\w+)"><b>\w+</b>(.*?)</li>',
                      html, re.S)
    assert first is not None and first.group(1) == "problem"
    assert first.group(2).startswith("fit: The scaling-law fit is degenerate: alpha = 10")
    assert "sd 0.15" in first.group(2) and "did not fix it: A vanished" in first.group(2)


def _write_summary(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary stage on a synthetic run, which has no token shards to read the
    vocabulary from: the model's is given."""
    from lmalloc.run.context import RunContext, RunOptions
    from lmalloc.run.summary import write_summary

    monkeypatch.setattr(RunContext, "vocab", property(lambda _self: 512))
    write_summary(RunContext(root, RunOptions(budget="2e13flops", hardware="cpu")))


def test_run_summary_carries_the_verdicts(run_factory: Callable[..., Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = run_factory("eval")
    _write_summary(root, monkeypatch)
    doc = json.loads((root / "summary.json").read_text())
    found = {v["topic"]: v for v in doc["verdicts"]}
    assert found["interval"]["severity"] == "ok" and "3.450" in found["interval"]["text"]
    assert found["losses"]["text"].startswith("Two validation losses")
    assert doc["achieved"]["val_tokens"] == 4096 and doc["achieved"]["eval_tokens"] == 9000


def test_an_unexpected_artifact_is_a_warning_not_a_lost_summary(
        run_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = run_factory("eval")
    plan = json.loads((root / "plan.json").read_text())
    plan["data"] = {"epochs": 2.0}  # a plan.json from elsewhere, without the token counts
    (root / "plan.json").write_text(json.dumps(plan))
    _write_summary(root, monkeypatch)
    doc = json.loads((root / "summary.json").read_text())
    found = {v["topic"]: v for v in doc["verdicts"]}
    assert found["data"] == {"topic": "data", "severity": "warning", "text": "Could not be "
                             "judged from the run's artifacts (KeyError: 'unique_tokens')."}
    assert found["interval"]["severity"] == "ok"  # the others are judged as before
    (root / "study.db").unlink()  # fewer figures: faster
    html = _html(build_report(root))  # the report builds too, saying the same
    assert "<b>warning</b>data: Could not be judged from the run&#x27;s artifacts" in html


def test_half_finished_run_reports_what_exists(run_factory: Callable[..., Path]) -> None:
    html = _html(build_report(run_factory("split")))
    for missing in ("Final training", "Evaluation", "Scaling-law fit", "Scaling ladder",
                    "Plan", "Compression"):
        assert f"{missing}: not run yet." in html
    assert "No plan yet" in html and html.count("<img ") == 1  # the ledger


def test_summary_of_a_planned_untrained_run(run_factory: Callable[..., Path]) -> None:
    text = summary_text(load_run(run_factory("plan")))
    assert text.startswith("Train a 400k-parameter model on 6M tokens: planned at 10 min")
    assert "not trained yet" in text and "Budget: 2e13flops" in text


def test_corrupt_json_is_a_user_error(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    (root / "summary.json").write_text("{")
    with pytest.raises(UserError, match=r"summary\.json"):
        build_report(root)
    assert not (root / "report.html").exists()


def test_status_of_a_running_run(run_factory: Callable[..., Path]) -> None:
    root = run_factory("search")
    m = json.loads((root / "manifest.json").read_text())
    del m["stages"]["search"]  # charged trials, not finished: running or interrupted
    (root / "manifest.json").write_text(json.dumps(m))
    s = run_status(root)
    states = {r["stage"]: r["state"] for r in s["stages"]}
    assert states["prepare"] == "done" and states["search"] == "running"
    assert states["train"] == "not run" and states["report"] == "not run"
    assert s["budget"]["spent"] == pytest.approx(4e11)
    assert s["budget"]["left"] == pytest.approx(2e13 - 4e11)
    assert s["plan"] is None and s["best_trial"]["params"] == {"lr": 0.01}


def test_cli_report_and_status_json(built: Path, run_factory: Callable[..., Path]) -> None:
    from lmalloc.cli import register

    early = run_factory("split")  # few figures: fast
    res = CliRunner().invoke(register(), ["report", str(early), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert Path(doc["report"]).is_file() and doc["figures"]["compression"] is None
    assert Path(doc["figures"]["ledger"]["png"]).is_file()
    res = CliRunner().invoke(register(), ["report", str(early)])
    assert res.exit_code == 0 and "not run yet" in res.stdout
    root = built
    res = CliRunner().invoke(register(), ["status", str(root), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert {r["stage"]: r["state"] for r in st["stages"]}["train"] == "done"
    assert st["plan"]["N"] == 4e5
    res = CliRunner().invoke(register(), ["status", str(root)])
    assert res.exit_code == 0 and "budget" in res.stdout and "done" in res.stdout
    res = CliRunner().invoke(register(), ["status", str(root.parent / "nope")])
    assert isinstance(res.exception, UserError)


def test_pipeline_report_failure_keeps_the_run(run_factory: Callable[..., Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lmalloc.run.context import RunContext, RunOptions
    from lmalloc.run.stages import report

    root = run_factory("split")

    def broken(_run: object) -> Path:
        raise RuntimeError("font cache exploded")

    monkeypatch.setattr("lmalloc.report.build.build_report", broken)
    said: list[str] = []
    report(RunContext(root, RunOptions(), say=said.append))
    m = json.loads((root / "manifest.json").read_text())
    assert "report" not in m["stages"]  # a rerun tries again
    assert "font cache exploded" in m["report_error"]
    assert said and said[0].startswith("[yellow]warning:[/]")
    monkeypatch.undo()
    report(RunContext(root, RunOptions(), say=said.append))
    m = json.loads((root / "manifest.json").read_text())
    assert m["stages"]["report"]["out"] == "report.html" and m["report_error"] is None


def test_the_search_section_shows_the_horizon_study_and_the_lr_law(
        finished: Path, tmp_path: Path) -> None:
    import numpy as np

    from lmalloc.scaling import load_laws, save_laws
    from lmalloc.scaling.hyperparams import fit_hyperparameter_laws

    root = tmp_path / "r"
    shutil.copytree(finished, root)
    (root / "study.db").unlink()  # fewer figures: faster
    search = json.loads((root / "search.json").read_text())
    search["trial_tokens"] = 40_960
    search["horizon"] = {"study": "horizon", "counts": {"complete": 5, "pruned": 9},
                         "trial_tokens": 10_240}
    (root / "search.json").write_text(json.dumps(search))
    rng = np.random.default_rng(0)
    D = np.repeat([10_240.0, 40_960.0], 16)
    lr = 0.05 * D**-0.3 * np.exp(rng.uniform(-2, 2, D.size))
    loss = 4 + 0.1 * np.log(lr / (0.05 * D**-0.3)) ** 2
    laws = load_laws(root / "laws.json")
    laws["hyperparameters"] = fit_hyperparameter_laws(D, loss, lr=lr, scale_name="D",
                                                      bootstrap=20)
    save_laws(root / "laws.json", laws)
    plan = json.loads((root / "plan.json").read_text())
    plan["hyperparameters"] = {"lr_source": "lr law 0.05·D^-0.3 (fitted)"}
    (root / "plan.json").write_text(json.dumps(plan))
    html = _html(build_report(root))
    assert "Horizon study &#x27;horizon&#x27; (10,240 tokens per trial, against 40,960" in html
    assert "5 complete, 9 pruned trials" in html
    assert re.search(r"Learning-rate law lr\* = [0-9.e-]+·D\^-0\.\d+ \(exponent", html)
    assert "D = 1.02e+04:" in html and "The plan&#x27;s lr: lr law 0.05·D^-0.3" in html

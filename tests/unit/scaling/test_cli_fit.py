"""``lmalloc fit``: a valid table exits 0 with the allocation; bad input exits 2 with a message."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmalloc.cli import main, register
from lmalloc.scaling import load_laws
from lmalloc.scaling.simulate import simulate_runs


@pytest.fixture
def runs_csv(tmp_path: Path) -> Path:
    runs = simulate_runs(seed=0)
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["params", "tokens", "val_loss"])
        w.writerows(zip(runs.N, runs.D, runs.loss, strict=True))
    return path


def test_fit_json_and_laws_file(runs_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "laws.json"
    args = [
        "fit",
        str(runs_csv),
        "--target-flops",
        "1e21",
        "--method",
        "both",
        "--bootstrap",
        "20",
        "--json",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(register(), args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["n_runs"] == 45 and doc["optimal"]["N"]["low"] <= doc["optimal"]["N"]["value"]
    assert set(doc["parametric"]["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    assert "isoflop_optimal" in doc
    assert load_laws(out)["parametric"].params == pytest.approx(doc["parametric"]["params"])


def test_fit_table_output_and_extrapolation_warning(runs_csv: Path) -> None:
    args = ["fit", str(runs_csv), "--target-flops", "1e25", "--bootstrap", "10"]
    result = CliRunner().invoke(register(), args)
    assert result.exit_code == 0, result.output
    assert "compute-optimal" in result.stdout and "alpha" in result.stdout
    assert "beyond the largest run" in result.stderr


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["lmalloc", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0)


def test_bad_table_exits_2_with_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("params,loss\n1e7,3.9\n")
    assert _main(monkeypatch, "fit", str(bad)) == 2
    assert "lacks column(s) D" in capsys.readouterr().err
    few = tmp_path / "few.csv"
    few.write_text("N,D,loss\n" + "".join(f"{n},{10 * n},3.{n}\n" for n in range(1, 6)))
    assert _main(monkeypatch, "fit", str(few)) == 2
    assert "add 3 more" in capsys.readouterr().err
    assert _main(monkeypatch, "fit", str(few), "--method", "chinchilla") == 2
    assert "invalid method" in capsys.readouterr().err


def test_no_bootstrap_gives_strict_json(runs_csv: Path) -> None:
    args = ["fit", str(runs_csv), "--target-flops", "1e21", "--bootstrap", "0", "--json"]
    result = CliRunner().invoke(register(), args)
    assert result.exit_code == 0, result.output

    def reject(name: str) -> None:
        raise AssertionError(f"invalid JSON constant {name}")

    doc = json.loads(result.stdout, parse_constant=reject)
    assert doc["optimal"]["N"]["low"] is None and doc["optimal"]["N"]["value"] > 0

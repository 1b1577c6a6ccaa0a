"""Reading runs tables: aliases, optional columns, and messages that say what to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.scaling import read_runs


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "runs.csv"
    p.write_text(text)
    return p


def test_aliases_case_insensitive_and_extra_columns(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "Params,TOKENS,Val_Loss,FLOPs,name\n1e7,2e8,3.9,1.2e16,a\n2e7,4e8,3.6,,b\n"
    )
    t = read_runs(p)
    assert t.N.tolist() == [1e7, 2e7] and t.D.tolist() == [2e8, 4e8] and len(t) == 2
    assert t.C is not None and t.C[0] == 1.2e16 and np.isnan(t.C[1])
    assert t.compute().tolist() == [1.2e16, 6 * 2e7 * 4e8]  # empty C cell: 6 N D
    assert t.lr is None


def test_short_names(tmp_path: Path) -> None:
    t = read_runs(_write(tmp_path, "N,D,L,lr,batch_size\n1e7,2e8,3.9,1e-3,64\n"))
    assert t.loss.tolist() == [3.9] and t.lr is not None and t.batch is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="runs table not found"):
        read_runs(tmp_path / "nope.csv")


def test_missing_columns_are_named_with_aliases(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        read_runs(_write(tmp_path, "params,loss\n1e7,3.9\n"))
    msg = str(e.value)
    assert "D (any of: d, tokens, n_tokens, num_tokens)" in msg and "params, loss" in msg


def test_non_numeric_and_non_positive_cells_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"line 3: loss = 'nan-ish' is not a number"):
        read_runs(_write(tmp_path, "N,D,loss\n1e7,2e8,3.9\n1e7,2e8,nan-ish\n"))
    with pytest.raises(UserError, match=r"line 2: N = '-5' must be a positive number"):
        read_runs(_write(tmp_path, "N,D,loss\n-5,2e8,3.9\n"))
    with pytest.raises(UserError, match=r"line 2: D = '' is not a number"):
        read_runs(_write(tmp_path, "N,D,loss\n1e7,,3.9\n"))


def test_empty_and_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is empty"):
        read_runs(_write(tmp_path, "\n"))
    with pytest.raises(UserError, match="no runs"):
        read_runs(_write(tmp_path, "N,D,loss\n"))
    with pytest.raises(UserError, match="several columns could be N"):
        read_runs(_write(tmp_path, "N,params,D,loss\n1,1,1,1\n"))

"""Reading tables of runs (CSV) into arrays, with messages that say what to fix.

A runs table has one row per finished training run and columns, matched case-insensitively:

* N (parameters): ``N``, ``params``, ``n_params``, ``num_params``, ``parameters``
* D (tokens): ``D``, ``tokens``, ``n_tokens``, ``num_tokens``
* loss: ``loss``, ``L``, ``val_loss``, ``eval_loss``
* optional compute C: ``C``, ``flops``, ``compute``
* optional, for hyperparameter laws: ``lr`` / ``learning_rate``, ``batch`` / ``batch_size`` /
  ``bs``

Other columns are ignored. Parsing is the csv module plus numpy (no pandas), so this works on
anyone's export. An empty optional cell means "not given" (NaN; C then defaults to k N D).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import UserError

FloatArray = NDArray[np.float64]

ALIASES: dict[str, tuple[str, ...]] = {
    "N": ("n", "params", "n_params", "num_params", "parameters"),
    "D": ("d", "tokens", "n_tokens", "num_tokens"),
    "loss": ("loss", "l", "val_loss", "eval_loss"),
    "C": ("c", "flops", "compute"),
    "lr": ("lr", "learning_rate"),
    "batch": ("batch", "batch_size", "bs"),
}


@dataclass(frozen=True, eq=False)
class RunsTable:
    """Columns of a runs table as float arrays (``C``, ``lr``, ``batch`` may be None).

    ``C`` holds NaN where a row left it empty; :meth:`compute` fills those with ``k N D``.
    """

    N: FloatArray
    D: FloatArray
    loss: FloatArray
    C: FloatArray | None = None
    lr: FloatArray | None = None
    batch: FloatArray | None = None
    source: str = "<arrays>"

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def compute(self, flops_per_token_per_param: float = 6.0) -> FloatArray:
        """Compute per run: the table's C where given, else ``k * N * D``."""
        kND: FloatArray = flops_per_token_per_param * self.N * self.D
        if self.C is None:
            return kND
        out: FloatArray = np.where(np.isnan(self.C), kND, self.C)
        return out


def _header_map(header: list[str], path: Path) -> dict[str, int]:
    lowered = [h.strip().lower() for h in header]
    found: dict[str, int] = {}
    for field, names in ALIASES.items():
        hits = [i for i, h in enumerate(lowered) if h in names]
        if len(hits) > 1:
            cols = ", ".join(header[i] for i in hits)
            raise UserError(f"{path}: several columns could be {field} ({cols}); keep one")
        if hits:
            found[field] = hits[0]
    return found


def _missing_message(path: Path, header: list[str], missing: list[str]) -> str:
    parts = [f"{m} (any of: {', '.join(ALIASES[m])})" for m in missing]
    return (
        f"{path} lacks column(s) {'; '.join(parts)}. Its columns are: "
        f"{', '.join(header) or '(none)'}. Names are matched case-insensitively."
    )


def _parse(path: Path, line: int, field: str, text: str, optional: bool) -> float:
    text = text.strip()
    if not text and optional:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: {field} = {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{path}, line {line}: {field} = {text!r} must be a positive number")
    return value


def read_runs(
    path: str | os.PathLike[str], required: tuple[str, ...] = ("N", "D", "loss")
) -> RunsTable:
    """Read a CSV of runs; every other known column is read when present.

    Raises:
        UserError: the file is missing or empty, a required column is missing (the message
            lists the accepted names), or a cell is non-numeric or not positive (with its line).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "runs.csv")
    >>> _ = open(p, "w").write("params,tokens,val_loss\\n1e7,2e8,3.9\\n2e7,4e8,3.6\\n")
    >>> read_runs(p).N.tolist()
    [10000000.0, 20000000.0]
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"runs table not found: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read runs table {path}: {e}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"runs table {path} is empty; expected a header row and one row per run")
    header, body = rows[0], rows[1:]
    cols = _header_map(header, path)
    missing = [f for f in required if f not in cols]
    if missing:
        raise UserError(_missing_message(path, header, missing))
    if not body:
        raise UserError(f"runs table {path} has a header but no runs")
    data: dict[str, list[float]] = {f: [] for f in cols}
    for line, row in enumerate(body, start=2):
        for field, j in cols.items():
            cell = row[j] if j < len(row) else ""
            data[field].append(_parse(path, line, field, cell, optional=field not in required))
    arrays = {f: np.asarray(v, dtype=np.float64) for f, v in data.items()}
    nan = np.full(len(body), np.nan)
    return RunsTable(
        N=arrays.get("N", nan),
        D=arrays.get("D", nan),
        loss=arrays["loss"],
        C=arrays.get("C"),
        lr=arrays.get("lr"),
        batch=arrays.get("batch"),
        source=str(path),
    )

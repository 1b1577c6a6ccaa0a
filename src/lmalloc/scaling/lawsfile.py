"""laws.json: the fitted laws of a run, written atomically and read back into fit objects.

The file is one JSON object whose entries are fits' ``to_dict()`` (each carries a ``kind``:
``"parametric"``, ``"isoflop"`` or ``"hyperparameters"``) plus plain data (e.g. an
``"optimal"`` allocation), so the planner and the report read the same numbers the fit printed.
"""

from __future__ import annotations

import os
from typing import Any

from lmalloc.rundir import atomic_write_json, read_json
from lmalloc.scaling.hyperparams import HyperparameterLaws
from lmalloc.scaling.isoflop import IsoFLOPFit
from lmalloc.scaling.parametric import ParametricFit

LAWS_FORMAT = 1
_KINDS: dict[str, Any] = {
    "parametric": ParametricFit,
    "isoflop": IsoFLOPFit,
    "hyperparameters": HyperparameterLaws,
}


def save_laws(path: str | os.PathLike[str], entries: dict[str, Any]) -> None:
    """Write ``entries`` (fit objects or JSON-ready dicts) to ``path`` atomically."""
    doc: dict[str, Any] = {"format": LAWS_FORMAT}
    for name, value in entries.items():
        doc[name] = value.to_dict() if hasattr(value, "to_dict") else value
    atomic_write_json(path, doc)


def load_laws(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read laws.json; entries with a known ``kind`` come back as fit objects, others as dicts.

    Raises:
        UserError: the file is missing or corrupt.
    """
    doc: dict[str, Any] = read_json(path, "laws file")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        kind = value.get("kind") if isinstance(value, dict) else None
        out[name] = _KINDS[kind].from_dict(value) if kind in _KINDS else value
    return out

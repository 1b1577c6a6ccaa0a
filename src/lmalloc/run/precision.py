"""What quantizing will cost, measured on the ladder's own models (``lmalloc run
--deploy-memory``).

The ladder leaves cooled-down checkpoints at several sizes N and token counts D. Each is
quantized uniformly to every candidate bit width (round-to-nearest, the method ``lmalloc
compress`` always has) and evaluated on the validation split; the increases of loss are the
measurements the precision law (:mod:`lmalloc.scaling.precision`) is fitted to. The planner
then prices "bigger model, fewer bits" against "smaller model, more bits" with it.

Cost: evaluation only (no training), a few seconds per checkpoint and format at ladder sizes,
charged to the ledger as the ``precision`` stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmalloc.errors import UserError
from lmalloc.layout import PRECISION_JSON
from lmalloc.rundir import RunDir, atomic_write_json, read_json
from lmalloc.scaling.precision import PrecisionLaw, fit_precision_law

BITS = (8, 4, 3, 2)
EVAL_TOKENS = 32768
GROUP_SIZE = 64


def ladder_checkpoint(run: RunDir, row: dict[str, Any]) -> str:
    """The folder of a ``ladder.csv`` row's model (its cooldown branch)."""
    return str(run.path(f"ladder/{int(row['size'])}/branch-{int(row['branch'])}"))


def model_degradation(folder: str, val: Any, bits: Sequence[int] = BITS,
                      eval_tokens: int = EVAL_TOKENS,
                      group_size: int = GROUP_SIZE) -> tuple[float, dict[int, float]]:
    """A trained model's validation loss and its increase at each uniform bit width."""
    import torch

    from lmalloc.compress.quantize import QuantFormat, quantizable_layers, quantize_model
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.io import load_model

    model, cfg = load_model(folder)

    def loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(evaluate_lm(m, val, seq_len=cfg.seq_len, batch_size=8,
                                     max_tokens=eval_tokens)["loss"])

    base = loss(model)
    deltas = {}
    for b in bits:
        fmt = QuantFormat(b, group_size).name
        deltas[b] = loss(quantize_model(model, dict.fromkeys(quantizable_layers(model), fmt)))
        deltas[b] -= base
    return base, deltas


def measure_degradation(run: RunDir, rows: Sequence[dict[str, Any]],
                        bits: Sequence[int] = BITS, eval_tokens: int = EVAL_TOKENS,
                        group_size: int = GROUP_SIZE) -> list[dict[str, Any]]:
    """One row per (completed ladder model, bit width): N, D, the model's loss and δ."""
    from lmalloc.data.shards import TokenData

    val = TokenData(run.data).split("val")
    out = []
    for row in rows:
        if row.get("status", "completed") != "completed":
            continue
        base, deltas = model_degradation(ladder_checkpoint(run, row), val, bits, eval_tokens,
                                         group_size)
        out += [{"N": float(row["N"]), "D": float(row["D"]), "bits": b, "loss": base,
                 "delta": d}
                for b, d in deltas.items()]
    return out


def run_precision_stage(run: RunDir, rows: Sequence[dict[str, Any]]) -> PrecisionLaw | None:
    """Measure, fit and write ``precision.json``; the law, or None (with the reason written)
    when the measurements cannot identify it — the planner then ships unquantized models."""
    measured = measure_degradation(run, rows)
    doc: dict[str, Any] = {"measurements": measured, "eval_tokens": EVAL_TOKENS,
                           "group_size": GROUP_SIZE, "method": "rtn"}
    law: PrecisionLaw | None = None
    try:
        law = fit_precision_law([m["N"] for m in measured], [m["D"] for m in measured],
                                [m["bits"] for m in measured], [m["delta"] for m in measured])
        doc["law"] = law.to_dict()
    except UserError as e:
        doc["law"], doc["reason"] = None, str(e)
    atomic_write_json(run.path(PRECISION_JSON), doc)
    return law


def load_precision_law(run: RunDir) -> PrecisionLaw | None:
    """The law ``precision.json`` holds (None when it could not be fitted or is absent)."""
    path = run.path(PRECISION_JSON)
    if not path.exists():
        return None
    doc = read_json(path, "precision law")
    law = doc.get("law") if isinstance(doc, dict) else None
    return PrecisionLaw.from_dict(law) if isinstance(law, dict) else None

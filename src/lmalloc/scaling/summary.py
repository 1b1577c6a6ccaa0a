"""One call from a runs table to fitted laws and the optimal allocation (what ``lmalloc fit``
prints and writes to laws.json).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lmalloc.errors import invalid
from lmalloc.scaling.estimate import DEFAULT_LEVEL, Estimate
from lmalloc.scaling.isoflop import IsoFLOPFit, fit_isoflop
from lmalloc.scaling.optimal import Allocation, compute_optimal
from lmalloc.scaling.parametric import DEFAULT_BOOTSTRAP, ParametricFit, fit_parametric
from lmalloc.scaling.table import RunsTable, read_runs

METHODS = ("parametric", "isoflop", "both")


@dataclass(frozen=True)
class FitSummary:
    """The fits asked for and, given a target compute, the allocation each implies."""

    source: str
    n_runs: int
    parametric: ParametricFit | None
    isoflop: IsoFLOPFit | None
    target_flops: float | None
    optimal: Allocation | None
    isoflop_optimal: tuple[Estimate, Estimate] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the parametric and isoflop entries are laws.json-loadable fits."""
        out: dict[str, Any] = {"source": self.source, "n_runs": self.n_runs}
        if self.parametric is not None:
            out["parametric"] = self.parametric.to_dict()
        if self.isoflop is not None:
            out["isoflop"] = self.isoflop.to_dict()
        if self.target_flops is not None:
            out["target_flops"] = self.target_flops
        if self.optimal is not None:
            out["optimal"] = self.optimal.to_dict()
        if self.isoflop_optimal is not None:
            N, D = self.isoflop_optimal
            out["isoflop_optimal"] = {"N": N.to_dict(), "D": D.to_dict()}
        return out


MAX_BOOTSTRAP = 100_000


def fit_runs(
    runs: str | os.PathLike[str] | RunsTable,
    *,
    method: str = "parametric",
    target_flops: float | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
    flops_per_token_per_param: float = 6.0,
    param_convention: str = "total",
) -> FitSummary:
    """Read a runs table (or take one), fit by ``method`` and allocate ``target_flops``.

    >>> from lmalloc.scaling.simulate import simulate_runs
    >>> s = fit_runs(simulate_runs(), method="both", target_flops=1e20, bootstrap=5)
    >>> sorted(s.to_dict())[:4]
    ['isoflop', 'isoflop_optimal', 'n_runs', 'optimal']
    """
    if method not in METHODS:
        raise invalid("method", method, f"one of {list(METHODS)}")
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:  # numpy would fail (or run for days) beyond
        raise invalid("bootstrap", bootstrap, f"0 to {MAX_BOOTSTRAP} resamples (200-500 typical)")
    if seed is not None and not 0 <= seed < 2**63:
        raise invalid("seed", seed, "an integer from 0 to 2**63 - 1")
    table = runs if isinstance(runs, RunsTable) else read_runs(runs)
    k = flops_per_token_per_param
    common: dict[str, Any] = {"bootstrap": bootstrap, "level": level, "seed": seed}
    par = iso = None
    if method in ("parametric", "both"):
        par = fit_parametric(
            table.N,
            table.D,
            table.loss,
            C=table.compute(k),
            flops_per_token_per_param=k,
            param_convention=param_convention,
            **common,
        )
    if method in ("isoflop", "both"):
        iso = fit_isoflop(
            table.N,
            table.loss,
            C=table.compute(k),
            flops_per_token_per_param=k,
            param_convention=param_convention,
            **common,
        )
    target = target_flops
    return FitSummary(
        source=table.source,
        n_runs=len(table),
        parametric=par,
        isoflop=iso,
        target_flops=target,
        optimal=compute_optimal(par, target) if par is not None and target is not None else None,
        isoflop_optimal=iso.allocate(target) if iso is not None and target is not None else None,
    )

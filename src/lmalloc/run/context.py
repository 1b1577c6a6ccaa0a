"""What every stage of ``lmalloc run`` reads: one typed :class:`RunContext`.

Each input is read once, when a stage first needs it (the stage before has written it by
then): the hardware profile, the :class:`Allowance` (the budget in its one unit), the
vocabulary and tokens per byte of the prepared data, the :class:`~lmalloc.plan.recipe.Recipe`
and the search's result. The ledger in the manifest is the one thing read again each time: it
grows while the run spends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmalloc.errors import UserError
from lmalloc.layout import PROFILE_JSON, SEARCH_JSON
from lmalloc.plan.recipe import Recipe, SearchResult
from lmalloc.rundir import RunDir

if TYPE_CHECKING:
    from lmalloc.cost.hardware import HardwareProfile
    from lmalloc.model.config import GPTConfig

DEFAULT_BUDGET = "15m"


@dataclass(frozen=True)
class RunOptions:
    """What ``lmalloc run`` was asked for (stored in the manifest; a resume must match)."""

    data: tuple[str, ...] = ()
    budget: str = DEFAULT_BUDGET
    hardware: str | None = None
    seed: int = 0
    vocab_size: int = 4096
    bootstrap: int = 200  # resamples of the scaling fit (its intervals)
    recipe: Recipe = field(default_factory=Recipe)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = list(self.data)
        return d


@dataclass(frozen=True)
class Allowance:
    """The run's budget in the one unit it is spent in (``flops`` or ``seconds``)."""

    run: RunDir
    text: str  # as the user gave it
    unit: str
    total: float
    memory: float | None  # training memory per device (bytes)
    deploy: float | None  # the deployed model's limit (bytes); None = no deploy stages

    def spent(self, stage: str | None = None) -> float:
        """Charged to the ledger so far (by ``stage``, or by all)."""
        return float(self.run.spent(stage)[self.unit])

    def left(self) -> float:
        return self.total - self.spent()

    def reserve(self) -> float:
        """Kept back from the final run for evaluation and the summary, and for compression
        with a deployment limit (time budgets only: FLOP budgets count training alone)."""
        if self.unit == "flops":
            return 0.0
        return min(30.0, 0.03 * self.total) + (0.05 * self.total if self.deploy else 0.0)

    def for_final(self, promised: float | None = None) -> tuple[float, dict[str, Any] | None]:
        """What the final run may spend, and a note when that is less than ``promised`` (the
        split's final share less the reserve).

        Normally the rest less the reserve. Exploration holds its shares, so the rest falls
        short of the promise only by the time model's error; when it falls short by more than
        :data:`FINAL_TOLERANCE`, the note says by how much and which stages overspent. A run
        never ends without a model because exploration overspent: the final run gets at least
        :data:`FINAL_FLOOR` of its promise, past the total if need be (the note says so)."""
        rest = self.left() - self.reserve()
        if promised is None or rest >= promised * (1 - FINAL_TOLERANCE):
            if rest <= 0:
                raise UserError(f"the budget {self.text!r} was spent before the final run "
                                f"({self.spent():.3g} of {self.total:.3g} {self.unit}); "
                                "give a larger budget")
            return rest, None
        amount = max(rest, FINAL_FLOOR * promised)
        by_stage = {s: round(self.spent(s), 3) for s in ("prepare", "profile", "search",
                                                         "ladder", "fit", "precision")}
        note = {"promised": promised, "given": amount, "unit": self.unit,
                "over_total": amount > rest, "spent_by_stage": by_stage,
                "why": (f"the stages before the final run spent {self.spent():.4g} of "
                        f"{self.total:.4g} {self.unit}, leaving {max(rest, 0.0):.4g} of the "
                        f"{promised:.4g} promised"
                        + (f"; the final run gets {amount:.4g} (a floor of "
                           f"{FINAL_FLOOR:.0%} of its share), past the total budget"
                           if amount > rest else ""))}
        return amount, note


FINAL_TOLERANCE = 0.05
"""How far short of its promised share the final run may fall before the run says so."""
FINAL_FLOOR = 0.25
"""The least share of its promise the final run gets, even past the total budget."""


class RunContext:
    """One run directory, its options, and what its stages read (each read once)."""

    def __init__(self, run_dir: str | Path, options: RunOptions,
                 say: Callable[[str], None] = lambda _m: None, progress: bool = False,
                 nproc: int = 1, parallel: str = "auto") -> None:
        self.run = RunDir(run_dir)
        self.options = options
        self.recipe = replace(options.recipe, seed=options.seed)
        self.say, self.progress = say, progress
        # how the final run is laid out (not a run option: a resume may use other values)
        self.nproc, self.parallel = nproc, parallel

    def done(self, stage: str) -> bool:
        return stage in self.run.manifest().get("stages", {})

    @property
    def hardware_name(self) -> str:
        """A built-in profile's name, or the measured profile's path."""
        return self.options.hardware or str(self.run.path(PROFILE_JSON))

    @functools.cached_property
    def hardware(self) -> HardwareProfile:
        from lmalloc.cost.hardware import get_hardware

        return get_hardware(self.hardware_name)

    @functools.cached_property
    def allowance(self) -> Allowance:
        from lmalloc.cost.budget import parse_budget

        b = parse_budget(self.options.budget, hardware=self.hardware)
        unit, total = b.unit_total()
        return Allowance(self.run, self.options.budget, unit, total, b.memory_bytes,
                         b.deploy_bytes)

    @functools.cached_property
    def _data(self) -> tuple[int, float]:
        from lmalloc.data.shards import TokenData

        data = TokenData(self.run.data)
        val = data.split("val")
        return data.vocab_size, val.num_tokens / max(1, val.num_bytes)

    @property
    def vocab(self) -> int:
        return self._data[0]

    @property
    def tokens_per_byte(self) -> float:
        return self._data[1]

    @functools.cached_property
    def search(self) -> SearchResult:
        return SearchResult.load(self.run.path(SEARCH_JSON), self.recipe)

    def cost(self, evals: int = 1, calibrated: bool = True) -> Callable[[GPTConfig, float],
                                                                         float]:
        """``cost(cfg, tokens)`` in the allowance's unit (see ``plan.planner.cost_function``)."""
        from lmalloc.plan.planner import cost_function

        scale = self.time_scale() if calibrated else 1.0
        return cost_function(self.allowance.unit, self.hardware, self.recipe, evals,
                             time_scale=scale)

    def time_scale(self) -> float:
        """Measured over predicted seconds of this run's own trainings so far (search trials
        and ladder runs), clipped to [0.25, 10]; 1 for FLOP budgets or before any training.
        The profile is measured once, quickly, and other load on the machine or per-run
        overheads (model build, evaluation, checkpoints) shift real times: the stages after
        the search plan with the time model corrected by this factor."""
        if self.allowance.unit != "seconds":
            return 1.0
        from lmalloc.model.config import GPTConfig
        from lmalloc.plan.planner import eval_seconds
        from lmalloc.run.explore import trial_seconds

        predicted = measured = 0.0
        if self.run.path(SEARCH_JSON).exists():
            proxy = GPTConfig.from_dict(self.search.proxy)
            whole = self.cost(self.recipe.evals_per_run, calibrated=False)
            train, evaluation = self.cost(0, calibrated=False), eval_seconds(self.hardware,
                                                                            self.recipe)
            for trials, every in self.search.studies:
                for t in trials:
                    if t.get("tokens") and t.get("seconds"):
                        predicted += (whole(proxy, float(t["tokens"])) if every is None else
                                      trial_seconds(t, every, self.recipe, train, evaluation,
                                                    proxy))
                        measured += float(t["seconds"])
        for row in self.run.manifest().get("ledger", []):
            if row.get("predicted"):
                predicted += float(row["predicted"])
                measured += float(row["seconds"])
        return min(10.0, max(0.25, measured / predicted)) if predicted > 0 else 1.0

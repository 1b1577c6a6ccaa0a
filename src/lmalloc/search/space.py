"""Search spaces: which hyperparameters a study explores, over which ranges, and when.

A space is data (a TOML file or a dict), validated once into a :class:`SearchSpace`; the
objective (later, the one that trains a tiny GPT per trial) calls :meth:`SearchSpace.suggest`
and gets back a plain dict of the *active* parameters. Keys are free-form names: the objective
maps them onto model and trainer fields, so the space never needs to know the trainer.

TOML form (``configs/space_tiny.toml`` is a full example)::

    grid_points = 5                      # optional: points per numeric dimension for `grid`

    [params.lr]
    type = "float"                        # float | int | categorical
    low = 1e-4
    high = 3e-2
    log = true                            # sample uniformly in log space

    [params.schedule]
    type = "categorical"
    choices = ["cosine", "wsd"]

    [params.cooldown_frac]
    type = "float"
    low = 0.1
    high = 0.5
    when = { schedule = "wsd" }           # conditional: only suggested when schedule == "wsd"

``when`` maps parent names to one allowed value or a list of allowed values; every parent
must be a categorical parameter of the same space and every value one of its choices, so a
contradictory space is rejected when it is loaded, not after a day of trials. A parameter is
active when all its parents are active and hold an allowed value; parents are suggested first.

Numeric fields: ``step`` (float or int, not with ``log``) and ``grid`` (explicit grid values,
overriding ``grid_points``) are optional.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from lmalloc.errors import UserError, invalid

PARAM_TYPES = ("float", "int", "categorical")
DEFAULT_GRID_POINTS = 5
"""Points per numeric dimension in :meth:`SearchSpace.grid` unless the space says otherwise:
evenly spaced from low to high inclusive (in log space for ``log`` parameters), rounded to
the step for ints and stepped floats, duplicates removed."""

_PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "when", "grid"}
_TOP_KEYS = {"params", "grid_points"}


@dataclass(frozen=True)
class Param:
    """One dimension of the space, validated at construction."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[CategoricalChoiceType, ...] = ()
    when: dict[str, tuple[CategoricalChoiceType, ...]] = field(default_factory=dict)
    grid: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        where = f"params.{self.name}"
        if self.type not in PARAM_TYPES:
            raise invalid(f"{where}.type", self.type, f"one of {', '.join(PARAM_TYPES)}")
        if self.grid is not None:
            self._check_grid(where)
        if self.type == "categorical":
            if not self.choices:
                raise invalid(f"{where}.choices", list(self.choices), "a non-empty list")
            if len(set(self.choices)) != len(self.choices):
                raise invalid(f"{where}.choices", list(self.choices), "distinct values")
            return
        self._check_numeric(where)

    def _check_grid(self, where: str) -> None:
        assert self.grid is not None
        if not self.grid:
            raise invalid(f"{where}.grid", [], "a non-empty list of values")
        if self.type == "categorical":
            bad = [v for v in self.grid if v not in self.choices]
        else:
            lo, hi = self.low, self.high
            ok = isinstance(lo, int | float) and isinstance(hi, int | float)
            bad = [v for v in self.grid if not ok or not isinstance(v, int | float)
                   or isinstance(v, bool) or not lo <= v <= hi]
        if bad:
            raise invalid(f"{where}.grid", bad[0], "values inside the parameter's range/choices")

    def _check_numeric(self, where: str) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise invalid(f"{where}.{key}", value, "a number")
        assert self.low is not None and self.high is not None
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise invalid(f"{where}.low/high", (self.low, self.high), "integers for type int")
        if not self.low < self.high:
            raise invalid(f"{where}.low", self.low, f"a value below high = {self.high}")
        if self.log and self.low <= 0:
            raise invalid(f"{where}.low", self.low, "a value > 0 when log = true")
        if self.step is not None:
            if self.log:
                raise invalid(f"{where}.step", self.step, "no step when log = true")
            if not isinstance(self.step, int | float) or not self.step > 0:
                raise invalid(f"{where}.step", self.step, "a positive number")
            n = (self.high - self.low) / self.step
            if abs(n - round(n)) > 1e-9 * max(1.0, n):
                raise invalid(f"{where}.step", self.step, "a divisor of high - low")

    @property
    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter is suggested from."""
        if self.type == "categorical":
            return CategoricalDistribution(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: BaseTrial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self, points: int) -> list[Any]:
        """Grid points for this dimension (see :data:`DEFAULT_GRID_POINTS`)."""
        if self.grid is not None:
            return list(self.grid)
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        raw = [lo + (hi - lo) * i / max(points - 1, 1) for i in range(points)]
        values = [math.exp(v) for v in raw] if self.log else raw
        # 10 significant digits hide exp/log round-off; clipping keeps the ends inside
        values = [min(max(float(f"{v:.10g}"), self.low), self.high) for v in values]
        if self.step is not None:
            values = [self.low + round((v - self.low) / self.step) * self.step for v in values]
        if self.type == "int":
            values = [int(round(v)) for v in values]
        return list(dict.fromkeys(values))


def _choices_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _param_from_dict(name: str, spec: Any) -> Param:
    if not isinstance(spec, Mapping):
        raise invalid(f"params.{name}", spec, "a table with at least `type`")
    unknown = set(spec) - _PARAM_KEYS
    if unknown:
        raise invalid(
            f"params.{name}",
            sorted(unknown)[0],
            f"one of the keys {', '.join(sorted(_PARAM_KEYS))}",
        )
    if "type" not in spec:
        raise invalid(f"params.{name}.type", None, f"one of {', '.join(PARAM_TYPES)}")
    when = spec.get("when", {})
    if not isinstance(when, Mapping):
        raise invalid(f"params.{name}.when", when, 'a table such as {schedule = "wsd"}')
    grid, choices = spec.get("grid"), spec.get("choices", ())
    for key, value in (("grid", grid), ("choices", choices)):
        if value is not None and not isinstance(value, list | tuple):
            raise invalid(f"params.{name}.{key}", value, "a list of values")
    return Param(
        name=name,
        type=spec["type"],
        low=spec.get("low"),
        high=spec.get("high"),
        log=bool(spec.get("log", False)),
        step=spec.get("step"),
        choices=tuple(choices or ()),
        when={k: _choices_tuple(v) for k, v in when.items()},
        grid=None if grid is None else tuple(grid),
    )


class SearchSpace:
    """An ordered, validated set of :class:`Param` with conditions.

    Build it with :meth:`from_toml`, :meth:`from_dict` or directly from ``Param`` objects.

    >>> space = SearchSpace.from_dict({"params": {
    ...     "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    ...     "schedule": {"type": "categorical", "choices": ["cosine", "wsd"]},
    ...     "cooldown_frac": {"type": "float", "low": 0.1, "high": 0.5,
    ...                       "when": {"schedule": "wsd"}}}})
    >>> space.names
    ('lr', 'schedule', 'cooldown_frac')
    >>> space.is_active("cooldown_frac", {"schedule": "cosine"})
    False
    """

    def __init__(self, params: Iterable[Param], grid_points: int = DEFAULT_GRID_POINTS) -> None:
        params = list(params)
        if not params:
            raise UserError("the search space is empty: declare at least one [params.<name>]")
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise invalid("params", dupes[0], "distinct parameter names (duplicate)")
        if not isinstance(grid_points, int) or isinstance(grid_points, bool) or grid_points < 1:
            raise invalid("grid_points", grid_points, "a positive integer")
        self.grid_points = grid_points
        self._params = {p.name: p for p in params}
        self._check_conditions()
        self._order = self._topological_order(names)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        """Build from ``{"params": {name: {type, ...}}, "grid_points": 5}``."""
        if not isinstance(d, Mapping):
            raise invalid("search space", d, "a table with a [params] section")
        unknown = set(d) - _TOP_KEYS
        if unknown:
            raise invalid("search space key", sorted(unknown)[0], f"one of {sorted(_TOP_KEYS)}")
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise invalid("params", params, "a table of parameter tables")
        return cls(
            [_param_from_dict(str(n), s) for n, s in params.items()],
            grid_points=d.get("grid_points", DEFAULT_GRID_POINTS),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> SearchSpace:
        """Load a space file; a missing or malformed file is a :class:`UserError`."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"search space file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"search space file {path} is not valid TOML: {e}") from None
        return cls.from_dict(data)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._params)

    @property
    def order(self) -> tuple[str, ...]:
        """Names in suggestion order: every parameter after the parents it depends on."""
        return tuple(self._order)

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(self._params.values())

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __len__(self) -> int:
        return len(self._params)

    @property
    def has_conditions(self) -> bool:
        return any(p.when for p in self._params.values())

    def _check_conditions(self) -> None:
        for p in self._params.values():
            for parent, values in p.when.items():
                where = f"params.{p.name}.when.{parent}"
                if parent == p.name:
                    raise invalid(
                        where, parent, "another parameter (a parameter cannot gate itself)"
                    )
                if parent not in self._params:
                    raise invalid(
                        where, parent, f"a parameter of this space: {list(self._params)}"
                    )
                q = self._params[parent]
                if q.type != "categorical":
                    raise invalid(where, parent, "a categorical parameter")
                bad = [v for v in values if v not in q.choices]
                if bad:
                    raise invalid(
                        where, bad[0], f"one of the choices of {parent}: {list(q.choices)}"
                    )

    def _topological_order(self, names: list[str]) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(n: str, path: tuple[str, ...]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                raise invalid("params.when", " -> ".join((*path, n)), "conditions without a cycle")
            state[n] = 1
            for parent in self._params[n].when:
                visit(parent, (*path, n))
            state[n] = 2
            order.append(n)

        for n in names:
            visit(n, ())
        return order

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name`` is suggested given the (already chosen) ``values`` of its parents."""
        for parent, allowed in self._params[name].when.items():
            if parent not in values or not self.is_active(parent, values):
                return False
            if values[parent] not in allowed:
                return False
        return True

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Suggest every active parameter on ``trial``, parents first; return name -> value."""
        values: dict[str, Any] = {}
        for name in self._order:
            if self.is_active(name, values):
                values[name] = self._params[name].suggest(trial)
        return {n: values[n] for n in self._params if n in values}

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter's Optuna distribution, active or not."""
        return {n: p.distribution for n, p in self._params.items()}

    def grid(self) -> dict[str, list[Any]]:
        """The grid for :class:`optuna.samplers.GridSampler`: categoricals' choices, and
        ``grid_points`` points per numeric dimension (or its explicit ``grid`` list).

        Conditional parameters are part of the grid; a grid point whose parameter is
        inactive in a trial simply goes unused, so some grid points repeat a configuration.
        """
        return {n: p.grid_values(self.grid_points) for n, p in self._params.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def to_dict(self) -> dict[str, Any]:
        """The plain-data form, accepted back by :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for p in self._params.values():
            d: dict[str, Any] = {"type": p.type}
            if p.type == "categorical":
                d["choices"] = list(p.choices)
            else:
                d.update(low=p.low, high=p.high, log=p.log)
                if p.step is not None:
                    d["step"] = p.step
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when.items()}
            if p.grid is not None:
                d["grid"] = list(p.grid)
            out[p.name] = d
        return {"params": out, "grid_points": self.grid_points}

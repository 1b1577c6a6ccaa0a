"""Budgets: the one parser of budget strings, and what is left of a budget.

A budget string is a list of terms separated by commas and/or spaces:

==========================  ====================================================
term                        meaning
==========================  ====================================================
``90s`` ``10m`` ``2h``      wall-clock time (``s``, ``m``/``min``, ``h``, ``d``)
``1.5d``
``3e17flops``               total compute in FLOPs (``flop``/``flops``, any case). A bare
                            number (``3e17``) is REJECTED: it is ambiguous between FLOPs,
                            seconds and bytes, and a silent guess would mis-size a run by
                            orders of magnitude.
``8xH100`` ``8xH100:24h``   hardware (count × profile name), optionally with its time
``$500`` ``500usd``         money; needs a price per device-hour (from the hardware profile
                            or ``price_per_device_hour``); converted to wall time
``mem=80GB`` ``mem=24GiB``  training memory per device (replaces the profile's memory)
``deploy=4GB``              memory of the deployed (inference) model
==========================  ====================================================

Each kind may appear once. Sizes use SI (``KB``, ``MB``, ``GB``, ``TB`` = 10^3k) or binary
(``KiB``... = 2^10k) units. Everything is converted once, for the hardware, into seconds,
FLOPs and bytes: a time budget becomes ``seconds × devices × sustained FLOP/s``, where the
sustained rate is the measured training throughput of a profiled machine, or the datasheet
peak × :data:`lmalloc.cost.hardware.DEFAULT_UTILISATION` (0.40) otherwise. When both time and
FLOPs are given, the tighter one wins (``flops`` is the minimum).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from lmalloc.cost.hardware import HardwareProfile, default_hardware, get_hardware
from lmalloc.errors import UserError

TIME_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0,
              "d": 86400.0}
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TIME = re.compile(rf"^({_NUM})\s*([a-z]+)$", re.I)
_FLOPS = re.compile(rf"^({_NUM})\s*flops?$", re.I)
_MONEY = re.compile(rf"^(?:\$\s*({_NUM})|({_NUM})\s*(?:usd|\$))$", re.I)
_SIZE = re.compile(rf"^({_NUM})\s*([a-z]+)$", re.I)
_HW = re.compile(r"^((?:\d+\s*[x×*]\s*)?[A-Za-z][\w.\-]*)(?::(.+))?$")
_BARE = re.compile(rf"^{_NUM}$")
ALLOWED = ("a time (90s, 10m, 2h, 1.5d), compute (3e17flops), hardware (8xH100 or "
           "8xH100:24h), money ($500), mem=80GB or deploy=4GB, separated by commas or spaces")


@dataclass(frozen=True)
class Budget:
    """A parsed budget, converted into seconds, FLOPs and bytes for one hardware profile.

    Attributes:
        text: canonical budget string; ``parse_budget(b.text, ...)`` gives ``b`` back.
        seconds: wall-clock limit (given, or money / (price × devices)); None = unlimited.
        flops: total compute limit: the given FLOPs and/or ``seconds × devices × sustained``
            FLOP/s, the smaller; None when neither time nor compute was given.
        memory_bytes: training memory per device: ``mem=`` if given, else the device's.
        deploy_bytes: memory the deployed model may use (``deploy=``); None = unlimited.
        hardware: profile name; devices: how many.
        money: the money term; price_per_device_hour: the price used to convert it.
        sustained_flops_per_device: the FLOP/s used to convert time into FLOPs.
        flops_given: the compute the user gave (``...flops``), None when ``flops`` is only
            converted from time: a stage that measures time need not also charge FLOPs
            against an assumed utilisation.
    """

    text: str
    seconds: float | None
    flops: float | None
    memory_bytes: float
    deploy_bytes: float | None
    hardware: str
    devices: int
    money: float | None = None
    price_per_device_hour: float | None = None
    sustained_flops_per_device: float = 0.0
    flops_given: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def unit_total(self) -> tuple[str, float]:
        """The one unit a run spends this budget in, and how much: FLOPs when compute was
        given, else seconds; a :class:`UserError` when it gives neither.

        >>> parse_budget("1e15flops,10m", hardware="h100").unit_total()
        ('flops', 1000000000000000.0)
        >>> parse_budget("90s", hardware="cpu").unit_total()
        ('seconds', 90.0)
        """
        if self.flops_given is not None:
            return "flops", float(self.flops_given)
        if self.seconds is not None:
            return "seconds", float(self.seconds)
        raise UserError(f"the budget {self.text!r} gives neither time nor compute: add one, "
                        "e.g. '15m' or '1e15flops'")


def _positive(value: float, term: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"invalid budget term {term!r}: the amount must be positive and finite")
    return value


def parse_time(text: str) -> float:
    """Seconds in ``"90s"``, ``"10m"``, ``"2h"``, ``"1.5d"``.

    >>> parse_time("1.5h")
    5400.0
    """
    m = _TIME.match(text.strip())
    if not m or m.group(2).lower() not in TIME_UNITS:
        raise UserError(f"invalid time {text!r}: expected a number and a unit in "
                        f"{', '.join(TIME_UNITS)} (e.g. 90s, 10m, 2h, 1.5d)")
    return _positive(float(m.group(1)) * TIME_UNITS[m.group(2).lower()], text)


def parse_size(text: str) -> float:
    """Bytes in ``"80GB"`` (10^9) or ``"24GiB"`` (2^30).

    >>> parse_size("24GiB") == 24 * 2**30
    True
    """
    m = _SIZE.match(text.strip())
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise UserError(f"invalid size {text!r}: expected a number and a unit in "
                        "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (of 1024)")
    return _positive(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()], text)


def _terms(text: str) -> dict[str, str]:
    """Split into terms and classify each; a kind given twice is an error."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty budget: expected {ALLOWED}")
    found: dict[str, str] = {}
    for term in (t for t in re.split(r"[,\s]+", text.strip()) if t):
        low = term.lower()
        if low.startswith(("mem=", "deploy=")):
            kind = low.split("=", 1)[0]
        elif _FLOPS.match(term):
            kind = "flops"
        elif _MONEY.match(term):
            kind = "money"
        elif (tm := _TIME.match(term)) and tm.group(2).lower() in TIME_UNITS:
            kind = "time"
        elif _BARE.match(term):
            raise UserError(f"budget term {term!r} has no unit: write {term}flops for "
                            "compute, or a time (s, m, h, d) or size (GB) unit")
        elif _HW.match(term):
            kind = "hardware"
        else:
            raise UserError(f"invalid budget term {term!r}: expected {ALLOWED}")
        if kind in found:
            raise UserError(f"budget {text!r} gives {kind} twice ({found[kind]!r}, {term!r})")
        found[kind] = term
    return found


def parse_budget(
    text: str,
    hardware: str | HardwareProfile | None = None,
    price_per_device_hour: float | None = None,
    precision: str | None = None,
) -> Budget:
    """Parse a budget string once into seconds, FLOPs and bytes.

    Args:
        text: the budget (see the module docstring for the grammar).
        hardware: profile used when the string names none (default: this machine's saved
            ``local`` profile, else the generic ``cpu`` one).
        price_per_device_hour: price for ``$`` budgets (else the profile's price).
        precision: training dtype for the FLOP/s conversion (default: the profile's).

    Example:
        >>> b = parse_budget("8xH100:24h,mem=80GB,deploy=4GB")
        >>> b.devices, b.seconds, b.memory_bytes, b.deploy_bytes
        (8, 86400.0, 80000000000.0, 4000000000.0)
        >>> f"{b.flops:.3g}"  # 24 h x 8 x 989.5 TFLOP/s x 0.40 assumed utilisation
        '2.74e+20'
    """
    terms = _terms(text)
    seconds: float | None = None
    hw_term = terms.get("hardware")
    if hw_term is not None:
        spec, _, hw_time = hw_term.partition(":")
        prof = get_hardware(spec)
        if hw_time:
            if "time" in terms:
                raise UserError(f"budget {text!r} gives time twice ({hw_term!r}, "
                                f"{terms['time']!r})")
            seconds = parse_time(hw_time)
    else:
        prof = get_hardware(hardware) if hardware is not None else default_hardware()
    if "time" in terms:
        seconds = parse_time(terms["time"])
    money = price = None
    if "money" in terms:
        m = _MONEY.match(terms["money"])
        assert m is not None
        money = _positive(float(m.group(1) or m.group(2)), terms["money"])
        price = price_per_device_hour if price_per_device_hour is not None else prof.price_per_hour
        if price is None or not (price > 0 and math.isfinite(price)):
            raise UserError(f"a money budget ({terms['money']}) needs a positive price per "
                            f"device-hour: the profile {prof.name!r} has none; pass "
                            "--price (price_per_device_hour=)")
        money_s = money / (price * prof.count) * 3600.0
        seconds = money_s if seconds is None else min(seconds, money_s)
    sustained = prof.sustained_flops(precision)
    flops = seconds * prof.count * sustained if seconds is not None else None
    given: float | None = None
    if "flops" in terms:
        m = _FLOPS.match(terms["flops"])
        assert m is not None
        given = _positive(float(m.group(1)), terms["flops"])
        flops = given if flops is None else min(flops, given)
    if flops is not None and not math.isfinite(flops):
        raise UserError(f"the budget {text!r} is larger than any computer can count "
                        f"({seconds:.3g} s × {sustained:.3g} FLOP/s overflows)")
    mem = parse_size(terms["mem"].split("=", 1)[1]) if "mem" in terms else prof.memory_bytes
    deploy = parse_size(terms["deploy"].split("=", 1)[1]) if "deploy" in terms else None
    return Budget(
        text=_canonical(terms, prof),
        seconds=seconds,
        flops=flops,
        memory_bytes=mem,
        deploy_bytes=deploy,
        hardware=prof.name,
        devices=prof.count,
        money=money,
        price_per_device_hour=price,
        sustained_flops_per_device=sustained,
        flops_given=given,
    )


def _canonical(terms: dict[str, str], prof: HardwareProfile) -> str:
    """A canonical string: hardware first (when the text named it), then the other terms."""
    hw = terms.get("hardware")
    head = []
    if hw is not None:
        head = [f"{prof.count}x{prof.name}" + (":" + hw.partition(":")[2] if ":" in hw else "")]
    rest = [terms[k] for k in ("time", "flops", "money", "mem", "deploy") if k in terms]
    return ",".join([*head, *rest])


def check_before_work(text: str, hardware: str | None, min_deploy_bytes: float) -> Budget:
    """Everything a run's budget can be checked for before any work (prepare, profiling):
    its grammar, a time or compute term, a money term's price, hardware named differently
    from the hardware the run trains on, a deploy size no model fits. ``hardware`` is the
    run's ``--hardware``; None means the run measures this machine and trains on it, so a
    budget naming hardware is refused (this machine cannot be checked to be it before the
    profile; planning for other hardware without training is ``lmalloc plan``'s job).
    Returns the budget parsed for ``hardware`` (or this machine); the run parses it again
    for its measured profile."""
    terms = _terms(text)
    hw_term = terms.get("hardware")
    if hw_term is not None:
        named, hw_time = get_hardware(hw_term.partition(":")[0]), hw_term.partition(":")[2]
        others = [t for k, t in terms.items() if k != "hardware"]
        rest = ",".join([hw_time, *others] if hw_time else others) or "TIME"
        if hardware is None:
            raise UserError(
                f"the budget names {named.label} but no --hardware is given: `lmalloc run` "
                f"would measure this machine and train here, on a plan sized for "
                f"{named.label}. To train on {named.label}, run there with --budget {rest} "
                f"--hardware {named.label}; to plan a run for it from a finished "
                f"exploration, use `lmalloc plan --from RUN --budget {text}`")
        given = get_hardware(hardware)
        if (named.name, named.count) != (given.name, given.count):
            raise UserError(
                f"the budget names {named.label} but --hardware is {given.label}: the plan "
                f"would size a job for {named.label} and train it on {given.label}; give the "
                f"hardware once (e.g. --budget {rest} --hardware {named.label})")
    if "money" in terms:
        spec = hw_term.partition(":")[0] if hw_term else hardware
        prof = get_hardware(spec) if spec is not None else default_hardware()
        if prof.price_per_hour is None:
            raise UserError(
                f"a money budget ({terms['money']}) needs a price per device-hour and the "
                f"hardware profile {prof.label} has none: give the budget as time or compute "
                "instead (e.g. 2h or 1e15flops); `lmalloc estimate --price` converts money "
                "to time")
    b = parse_budget(text, hardware=hardware)
    b.unit_total()  # neither time nor compute: a UserError
    if b.deploy_bytes is not None and b.deploy_bytes < min_deploy_bytes:
        raise UserError(
            f"deploy memory {b.deploy_bytes:,.0f} bytes cannot hold any model: the smallest "
            f"one lmalloc plans needs about {min_deploy_bytes:,.0f} bytes even at 2 bits; "
            "give a larger size (e.g. deploy=2MB)")
    return b

"""Hardware profiles: what one device can do, from a datasheet or measured by ``lmalloc profile``.

A :class:`HardwareProfile` is the one interface the cost model sits behind: the budget parser,
the time model and the memory model read peak FLOP/s, memory and bandwidth from it, and prefer
*measured* numbers (``profile.measured``, written by :mod:`lmalloc.cost.profile`) over the
datasheet's.

Built-in profiles carry vendor **dense** (non-sparse) peak numbers: NVIDIA quotes Tensor Core
throughput "with sparsity" (2:4 structured), which is twice the dense figure; we always store
the dense one (half of the sparse figure) because dense matmuls are what training runs.

Names: ``get_hardware("8xH100")`` → 8 devices of ``h100-sxm``. Lookup order: built-in names
and aliases, then a saved profile ``<profile dir>/<name>.json`` (default
``~/.cache/lmalloc/profiles``, override with ``$LMALLOC_PROFILE_DIR``), then a path to a JSON.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.rundir import atomic_write_json, read_json

GB = 1e9
GIB = 2**30
TERA = 1e12
# Assumed model-FLOP utilisation of a datasheet (unmeasured) GPU profile: well-tuned dense
# transformer training reaches 35-55 % MFU on A100/H100 (e.g. PaLM, Chowdhery et al. 2022,
# Table 3: 46 %; MegaScale, Jiang et al. 2024: 55 %). 0.40 is a deliberately middling guess;
# `lmalloc profile` replaces it with a measurement.
DEFAULT_UTILISATION = 0.40
PROFILE_VERSION = 1

_H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (2023), dense (non-sparse) figures"
_H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (2024), dense (non-sparse) figures"
_A100_SHEET = "NVIDIA A100 Tensor Core GPU datasheet (2021), dense (non-sparse) figures"
_L4_SHEET = "NVIDIA L4 Tensor Core GPU datasheet (2023), dense (non-sparse) figures"
_A10_SHEET = (
    "NVIDIA A10 Tensor Core GPU datasheet (2021), dense figures; A10G is the AWS variant "
    "(g5 instances) with the same memory; its tensor throughput is reported lower than A10's, "
    "so treat these as an upper bound and run `lmalloc profile`"
)
_ADA_SHEET = (
    "NVIDIA Ada Lovelace GPU architecture whitepaper v1.03 (2023), RTX 4090 column, dense "
    "figures, FP16/BF16 tensor with FP32 accumulate"
)


@dataclass(frozen=True)
class HardwareProfile:
    """One kind of device, ``count`` of them.

    Attributes:
        name: profile name (``h100-sxm``, ``local``...).
        count: number of devices (``8xH100`` → 8).
        peak_flops: dense peak FLOP/s of ONE device per dtype (``fp32``, ``tf32``, ``bf16``,
            ``fp16``, ``int8``; int8 in ops/s).
        memory_bytes: memory of one device (bytes; GPU HBM, or RAM for a CPU).
        bandwidth: memory bandwidth of one device (bytes/s).
        interconnect: device-to-device bandwidth per device (bytes/s, one direction; NVLink or
            PCIe) used for gradient all-reduce time; None = single device only.
        price_per_hour: price of one device-hour (any currency, used for ``$`` budgets).
        source: where the numbers come from (datasheet name, or ``measured on <host>``).
        default_dtype: the dtype training uses on it (``bf16`` on GPUs, ``fp32`` on CPU).
        measured: numbers measured by ``lmalloc profile``: ``matmul_flops`` {dtype: FLOP/s},
            ``bandwidth`` (bytes/s), ``train`` (list of per-shape throughput rows).
        utilisation: fitted time-model parameters (see :mod:`lmalloc.cost.time_model`);
            empty = use the assumed ``DEFAULT_UTILISATION``.
    """

    name: str
    peak_flops: dict[str, float]
    memory_bytes: float
    bandwidth: float
    source: str
    count: int = 1
    interconnect: float | None = None
    price_per_hour: float | None = None
    default_dtype: str = "bf16"
    kind: str = "gpu"
    measured: dict[str, Any] = field(default_factory=dict)
    utilisation: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UserError(f"invalid device count = {self.count}: expected at least 1")
        if self.memory_bytes <= 0 or self.bandwidth <= 0:
            raise UserError(f"hardware profile {self.name!r}: memory and bandwidth must be > 0")
        if not self.peak_flops or min(self.peak_flops.values()) <= 0:
            raise UserError(f"hardware profile {self.name!r}: peak_flops must be positive")

    # -- numbers the cost model uses -------------------------------------------------------
    def peak(self, dtype: str | None = None) -> float:
        """Peak FLOP/s of one device in ``dtype``: measured matmul rate if profiled, else sheet.

        A dtype the device lacks falls back to fp32 (bf16 on an old CPU runs at fp32 speed or
        worse), so the answer is never optimistic.
        """
        dtype = _dtype_of(dtype or self.default_dtype)
        measured = self.measured.get("matmul_flops", {})
        if dtype in measured:
            return float(measured[dtype])
        if dtype in self.peak_flops:
            return float(self.peak_flops[dtype])
        return float(measured.get("fp32", self.peak_flops.get("fp32", 0.0)))

    def sustained_flops(self, dtype: str | None = None) -> float:
        """Training FLOP/s of ONE device actually reached (model FLOPs per second).

        Measured profiles: the median training throughput of the profiled shapes. Datasheet
        profiles: ``peak × DEFAULT_UTILISATION`` (an assumption, documented above).
        """
        rows = [r for r in self.measured.get("train", []) if r.get("flops_per_s")]
        if rows:
            vals = sorted(float(r["flops_per_s"]) for r in rows)
            return vals[len(vals) // 2]
        return self.peak(dtype) * DEFAULT_UTILISATION

    @property
    def total_memory_bytes(self) -> float:
        return self.memory_bytes * self.count

    def with_count(self, count: int) -> HardwareProfile:
        return dataclasses.replace(self, count=count)

    @property
    def label(self) -> str:
        return self.name if self.count == 1 else f"{self.count}x{self.name}"

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": PROFILE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HardwareProfile:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"version"}
        if unknown:
            raise UserError(f"hardware profile has unknown fields {sorted(unknown)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
            raise UserError(f"hardware profile is incomplete: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HardwareProfile:
        data = read_json(path, "hardware profile")
        if not isinstance(data, dict):
            raise UserError(f"hardware profile {path} is not a JSON object")
        return cls.from_dict(data)


def _gpu(
    name: str, fp32: float, tf32: float, bf16: float, int8: float, mem_gb: float,
    bw_gbs: float, link_gbs: float, source: str,
) -> HardwareProfile:
    """A GPU profile from datasheet numbers in TFLOP/s, GB and GB/s (dense)."""
    return HardwareProfile(
        name=name,
        peak_flops={"fp32": fp32 * TERA, "tf32": tf32 * TERA, "bf16": bf16 * TERA,
                    "fp16": bf16 * TERA, "int8": int8 * TERA},
        memory_bytes=mem_gb * GB,
        bandwidth=bw_gbs * GB,
        interconnect=link_gbs * GB,
        source=source,
    )


# Dense datasheet figures (sparse ones halved). Interconnect: NVLink bandwidth per direction
# (900 GB/s total bidirectional on H100/H200 SXM, 600 on A100 SXM) or PCIe Gen4/5 x16.
BUILTIN: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        _gpu("h100-sxm", 67, 494.5, 989.5, 1979, 80, 3350, 450, _H100_SHEET),
        _gpu("h100-pcie", 51, 378, 756, 1513, 80, 2000, 64, _H100_SHEET),
        _gpu("h200", 67, 494.5, 989.5, 1979, 141, 4800, 450, _H200_SHEET),
        _gpu("a100-40gb", 19.5, 156, 312, 624, 40, 1555, 300, _A100_SHEET),
        _gpu("a100-80gb", 19.5, 156, 312, 624, 80, 2039, 300, _A100_SHEET),
        _gpu("l4", 30.3, 60, 121, 242.5, 24, 300, 32, _L4_SHEET),
        _gpu("a10g", 31.2, 62.5, 125, 250, 24, 600, 32, _A10_SHEET),
        _gpu("rtx4090", 82.6, 82.6, 165.2, 660.6, 24, 1008, 32, _ADA_SHEET),
        HardwareProfile(
            name="cpu",
            peak_flops={"fp32": 1e11},
            memory_bytes=16 * GIB,
            bandwidth=20 * GB,
            source=("generic CPU placeholder (100 GFLOP/s fp32, 16 GiB, 20 GB/s): not a "
                    "measurement; run `lmalloc profile` to measure this machine"),
            default_dtype="fp32",
            kind="cpu",
        ),
    )
}
ALIASES = {
    "h100": "h100-sxm", "h100sxm": "h100-sxm", "h100pcie": "h100-pcie", "h200sxm": "h200",
    "a100": "a100-80gb", "a10080gb": "a100-80gb", "a10040gb": "a100-40gb", "a100-40": "a100-40gb",
    "a100-80": "a100-80gb", "a10": "a10g", "4090": "rtx4090", "rtx-4090": "rtx4090",
    "generic-cpu": "cpu",
}
_SPEC = re.compile(r"^\s*(?:(\d+)\s*[x×*]\s*)?([A-Za-z0-9][\w.\-]*)\s*$")


def profile_dir() -> Path:
    """Where ``lmalloc profile`` saves profiles: ``$LMALLOC_PROFILE_DIR`` or the user cache."""
    env = os.environ.get("LMALLOC_PROFILE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lmalloc" / "profiles"


def known_hardware() -> list[str]:
    """Built-in names plus saved profiles, for error messages and ``--help``."""
    saved = sorted(p.stem for p in profile_dir().glob("*.json")) if profile_dir().is_dir() else []
    return sorted(BUILTIN) + [s for s in saved if s not in BUILTIN]


def unknown_hardware(name: str) -> UserError:
    return UserError(
        f"unknown hardware {name!r}: known profiles are {', '.join(known_hardware())} "
        f"(aliases: {', '.join(sorted(ALIASES))}; prefix a count as in 8xH100). To use this "
        "machine, measure it with `lmalloc profile` (saved under "
        f"{profile_dir()}) and pass its name or the JSON path."
    )


def get_hardware(spec: str | HardwareProfile, count: int | None = None) -> HardwareProfile:
    """Resolve ``"8xH100"``, ``"a100-40gb"``, a saved profile name or a JSON path.

    Example:
        >>> hw = get_hardware("8xH100")
        >>> hw.name, hw.count, hw.peak("bf16") / 1e12
        ('h100-sxm', 8, 989.5)
    """
    if isinstance(spec, HardwareProfile):
        return spec if count is None else spec.with_count(count)
    text = str(spec).strip()
    if text.endswith(".json"):
        prof = HardwareProfile.load(text)
        return prof if count is None else prof.with_count(count)
    m = _SPEC.match(text)
    if not m:
        raise unknown_hardware(text)
    n = int(m.group(1)) if m.group(1) else 1
    if count is not None:
        n = count if not m.group(1) else n * count
    if n < 1:
        raise UserError(f"invalid device count = {n} in {text!r}: expected at least 1")
    key = m.group(2).lower()
    key = ALIASES.get(key, ALIASES.get(key.replace("-", "").replace("_", ""), key))
    if key in BUILTIN:
        return BUILTIN[key].with_count(n)
    saved = profile_dir() / f"{key}.json"
    if saved.is_file():
        return HardwareProfile.load(saved).with_count(n)
    raise unknown_hardware(m.group(2))


def default_hardware() -> HardwareProfile:
    """This machine: the saved ``local`` profile when ``lmalloc profile`` has run, else ``cpu``."""
    saved = profile_dir() / "local.json"
    return HardwareProfile.load(saved) if saved.is_file() else BUILTIN["cpu"]


def _dtype_of(precision: str) -> str:
    """The matmul dtype of a training precision (``bf16-pure`` → ``bf16``)."""
    p = precision.lower()
    if p.startswith("bf16"):
        return "bf16"
    if p.startswith("fp16"):
        return "fp16"
    return p

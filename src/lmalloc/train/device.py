"""Which device a run uses and whether it autocasts to bf16: the one home of both rules.

Torch is imported only when a rule needs to ask it, so configs and plans stay torch-free.
"""

from __future__ import annotations

from lmalloc.errors import invalid


def device_type(pref: str = "auto") -> str:
    """``cuda`` or ``cpu``: what ``pref`` (``auto``, ``cpu``, ``cuda``) runs on; ``auto`` is
    CUDA when a device is available; asking for CUDA without one is a :class:`UserError`."""
    if pref == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if pref == "cuda":
        raise invalid("device", pref, "cpu or auto: no CUDA device is available")
    return "cpu"


def uses_bf16(precision: str, dev_type: str) -> bool:
    """Whether training autocasts to bf16: ``bf16`` always, ``auto`` on a CUDA device that
    supports it (elsewhere bf16 autocast is slower than fp32 or unsupported)."""
    if precision == "bf16":
        return True
    if precision != "auto" or dev_type != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())

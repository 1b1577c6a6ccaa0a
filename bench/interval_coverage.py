"""The full coverage study of the parametric fit's bootstrap intervals (the slow half of
``tests/unit/scaling/test_coverage.py``, moved here: 444 s of a loaded 2-core machine, 28 % of
the suite). Not run by ``make test`` or CI; the fast version there checks the same function on
a few repetitions.

    nice .venv/bin/python bench/interval_coverage.py [--reps 30] [--bootstrap 40]

Exit 1 when the full study misses its bounds (nominal 0.9: loss_opt and N_opt in [0.7, 1],
every parameter >= 0.5; the percentile bootstrap is known to under-cover the ill-conditioned
(E, A, alpha) direction, Besiroglu et al. 2024). Writes ``bench/results/interval_coverage.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lmalloc.rundir import atomic_write_json
from lmalloc.scaling.coverage import interval_coverage
from lmalloc.scaling.simulate import CHINCHILLA

RESULTS = Path(__file__).resolve().parent / "results" / "interval_coverage.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--bootstrap", type=int, default=40)
    p.add_argument("--target", type=float, default=1e21)
    args = p.parse_args()
    t0 = time.perf_counter()
    rates = interval_coverage(args.reps, args.bootstrap, args.target)
    ok = (0.7 <= rates["loss_opt"] <= 1.0 and 0.7 <= rates["N_opt"] <= 1.0
          and min(rates[k] for k in CHINCHILLA) >= 0.5)
    out = {"reps": args.reps, "bootstrap": args.bootstrap, "target": args.target,
           "coverage": rates, "within_bounds": ok, "seconds": time.perf_counter() - t0}
    atomic_write_json(RESULTS, out)
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

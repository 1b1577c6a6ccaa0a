"""``python -m lmalloc.train`` — the entry point ``torchrun`` launches for data parallelism.

    torchrun --nproc_per_node 8 -m lmalloc.train --run-dir runs/NAME --recipe configs/small.toml

Same arguments and result as ``lmalloc train`` (rank 0 prints the result as JSON). Spell the
run folder ``--run-dir`` under torchrun: its own parser takes ``--run`` for ``--run-path``.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmalloc.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lmalloc.train", description=__doc__)
    p.add_argument("--run-dir", "--run", dest="run", required=True)
    p.add_argument("--recipe")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args(argv)
    import os

    from lmalloc.train.launch import train_run

    try:
        result = train_run(args.run, args.recipe, max_tokens=args.max_tokens,
                           max_seconds=args.max_seconds, lr=args.lr,
                           resume=not args.no_resume)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        _leave_group()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result, sort_keys=True))
    return 0


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""``python -m lmalloc.train`` — the entry point ``torchrun`` launches for data parallelism.

    torchrun --nproc_per_node 8 -m lmalloc.train --run-dir runs/NAME --recipe configs/small.toml

Same arguments and result as ``lmalloc train`` (rank 0 prints the result as JSON). Spell the
run folder ``--run-dir`` under torchrun: its own parser takes ``--run`` for ``--run-path``.
``--parallel auto`` (the default) picks DDP or FSDP from the memory model on every rank
(:func:`lmalloc.train.launch.choose_parallel`); ``lmalloc train --nproc N`` decides before
launching and passes its choice and reason.
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
    p.add_argument("--parallel", choices=("auto", "ddp", "fsdp"), default="auto")
    p.add_argument("--parallel-reason", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import os

    from lmalloc.train.launch import train_run, write_result

    try:
        result = train_run(args.run, args.recipe, max_tokens=args.max_tokens,
                           max_seconds=args.max_seconds, lr=args.lr,
                           resume=not args.no_resume, parallel=args.parallel,
                           parallel_reason=args.parallel_reason)
    except UserError as e:
        write_result({"error": str(e)})  # any rank: the launcher shows it and exits 2
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        _leave_group()
    if os.environ.get("RANK", "0") == "0" and not write_result({"result": result}):
        print(json.dumps(result, sort_keys=True))
    return 0


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

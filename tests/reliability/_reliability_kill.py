"""The process that the kill-anywhere test kills: a fork server for ``lmalloc run``.

``python _reliability_kill.py RUN_DIR CORPUS`` imports everything the pipeline uses once, prints
``READY``, then for each ``run`` line on stdin forks a child that runs (or resumes)
``run_pipeline(RUN_DIR, options(CORPUS))`` — the tiny complete run of the integration tests
(``tests/integration/_pipeline_run.py``) — and prints ``PID <pid>``, the child's stage lines
(``STAGE <name> <time>``) and ``EXIT <code>`` (negative: killed by that signal). Forking a warm
process instead of starting a new interpreter saves the seconds of importing torch at every
restart, so twenty kills fit in a few minutes; what runs and what is killed is the pipeline's
own code. ``fresh`` does the same in a new interpreter (``python -c``), for the cold path.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

STAGE_LINE = re.compile(r"^\[bold\](\w+)\[/\]")


def _line(text: str) -> None:
    """One protocol line in one write(2): the fork server and its child share stdout, and
    with PYTHONUNBUFFERED ``print`` writes the text and its newline separately, so the child's
    STAGE line could land inside the parent's "PID n" line (seen on a busy machine)."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (text + "\n").encode())


def _say(message: str) -> None:
    m = STAGE_LINE.match(message)
    if m:
        _line(f"STAGE {m.group(1)} {time.time():.4f}")


def run_once(root: str, corpus: str) -> int:
    """Run the pipeline; 0 when it finished, 2 for a UserError (printed), 1 for a bug."""
    import traceback

    from _pipeline_run import options

    from lmalloc.errors import UserError
    from lmalloc.run import run_pipeline

    try:
        run_pipeline(root, options(Path(corpus)), say=_say)
    except UserError as e:  # on stdout for the test, in the driver log for whoever reads it
        _line(f"USERERROR {e}")
        print(f"run_pipeline ended with a UserError (exit 2): {e}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _preload() -> None:
    """What the stages import lazily (so that a forked child starts warm)."""
    import optuna  # noqa: F401
    import torch  # noqa: F401

    import lmalloc.data.pipeline  # noqa: F401
    import lmalloc.evaluate.perplexity  # noqa: F401
    import lmalloc.plan.planner  # noqa: F401
    import lmalloc.report.build  # noqa: F401
    import lmalloc.run.explore  # noqa: F401
    import lmalloc.run.pipeline  # noqa: F401
    import lmalloc.scaling  # noqa: F401
    import lmalloc.search.study  # noqa: F401
    import lmalloc.train.launch  # noqa: F401
    import lmalloc.train.trainer  # noqa: F401


def serve(root: str, corpus: str) -> None:
    _preload()
    _line("READY")
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            return
        sys.stdout.flush()
        if cmd == "fresh":
            import subprocess

            proc = subprocess.Popen([sys.executable, __file__, "--once", root, corpus])
            _line(f"PID {proc.pid}")
            code = proc.wait()
        else:
            pid = os.fork()
            if pid == 0:  # the child: one attempt at the run
                os._exit(run_once(root, corpus))
            _line(f"PID {pid}")
            _, status = os.waitpid(pid, 0)
            code = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status))
        _line(f"EXIT {code}")


if __name__ == "__main__":
    if sys.argv[1] == "--once":
        sys.exit(run_once(sys.argv[2], sys.argv[3]))
    serve(sys.argv[1], sys.argv[2])

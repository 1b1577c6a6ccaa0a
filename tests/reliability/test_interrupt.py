"""Ctrl-C during a search (its trial runs in a thread inside torch) ends with exit 130 and a
note that the rerun resumes, not an abort (134, "terminate called without an active
exception"); the study keeps what finished and the rerun goes on from it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAIN = [sys.executable, "-c", "from lmalloc.cli import main; main()"]


def _trials(db: Path) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.mark.slow
def test_ctrl_c_during_search_exits_130_and_the_rerun_resumes(tiny_corpus_dir: Path,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "run"
    prep = subprocess.run([*MAIN, "prepare", "--run", str(run), str(tiny_corpus_dir),
                           "--vocab-size", "300"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    search = [*MAIN, "search", "--run", str(run), "--recipe", str(REPO / "configs" / "tiny.toml"),
              "--strategy", "random", "--pruner", "none"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    # a shell without job control starts background jobs with SIGINT ignored, and an ignored
    # signal stays ignored across exec (Python then installs no KeyboardInterrupt handler):
    # give the child the default disposition a terminal's foreground job has
    proc = subprocess.Popen([*search, "--trials", "200"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and "RUNNING" not in _trials(run / "study.db"):
        time.sleep(0.2)  # a trial is being trained, in the thread, right now
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "terminate called" not in err and "Traceback" not in err, err[-3000:]
    assert "rerun the same command to resume" in err
    before = _trials(run / "study.db")
    assert before, "the study was lost"
    again = subprocess.run([*search, "--trials", str(len(before) + 1)], capture_output=True,
                           text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the study" in again.stderr
    after = _trials(run / "study.db")
    assert len(after) > len(before) and "RUNNING" not in after

"""No server of the project's test services can be reached from another machine.

Ray 2.60 binds its GCS, raylet and agent ports on every interface whatever
``--node-ip-address`` says, and without authentication. So the Ray tests run inside a fresh
network namespace whose only interface is loopback (``scripts/private_net.sh``), made here and
gone when they end; ``scripts/ensure_ray.sh`` refuses to start a head anywhere else.
PostgreSQL listens on 127.0.0.1 by its own configuration. The last test lists the listening
sockets while both servers run and fails on any that a non-loopback address reaches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _listeners import listeners, outside_addresses  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
RAY_PORT = os.environ.get("LMALLOC_RAY_PORT", "6390")
PG_PORT = os.environ.get("LMALLOC_PG_PORT", "55432")
# the processes of the two services: Ray's (gcs_server, raylet, ray::..., python -m ray...)
# and PostgreSQL's (postgres)
SERVICES = ("ray", "gcs_server", "postgres")


def _in_namespace(command: str, **kw: object) -> subprocess.Popen[str]:
    """``command`` (sh) inside a fresh loopback-only namespace; Ray stopped before it ends."""
    script = f"{command}\nrc=$?\nsh scripts/ensure_ray.sh stop >/dev/null 2>&1\nexit $rc"
    return subprocess.Popen(["sh", str(SCRIPTS / "private_net.sh"), "sh", "-c", script],
                            cwd=REPO, text=True, **kw)  # type: ignore[call-overload]


def _namespaces_or_skip() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    if not outside_addresses():
        pytest.skip("already inside a loopback-only namespace (this test makes its own)")
    probe = subprocess.run(["sh", str(SCRIPTS / "private_net.sh"), "true"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.strip()}")


def test_ensure_ray_refuses_a_head_beyond_loopback() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    if not outside_addresses():
        pytest.skip("this namespace has only loopback: the refusal has nothing to refuse")
    env = {k: v for k, v in os.environ.items() if k != "LMALLOC_RAY_PUBLIC"}
    proc = subprocess.run(["sh", str(SCRIPTS / "ensure_ray.sh"), "start"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "refusing to start a Ray head reachable from the network" in proc.stderr
    assert "scripts/private_net.sh" in proc.stderr


def test_ray_tests_pass_in_a_loopback_only_namespace() -> None:
    _namespaces_or_skip()
    proc = _in_namespace(
        f"{sys.executable} -m pytest -q -p no:cacheprovider -m ray --timeout=600 "
        "tests/integration/test_ray_backend.py",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=1500)
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    assert proc.returncode == 0, out[-6000:]
    # every Ray test ran inside: none skipped (a head that cannot start skips them), none failed
    assert re.search(r"\b\d+ passed\b", summary) and "skipped" not in summary, out[-6000:]


@pytest.mark.postgres
def test_no_service_listens_beyond_loopback() -> None:
    """Ray (in its namespace) and PostgreSQL (on this machine) at once: their listening
    sockets, listed where each lives, are all on loopback."""
    _namespaces_or_skip()
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    pg = subprocess.run(["sh", str(SCRIPTS / "ensure_postgres.sh")], capture_output=True,
                        text=True, timeout=300)
    if pg.returncode != 0 or not pg.stdout.strip():
        pytest.skip(f"no PostgreSQL server: {pg.stderr.strip()}")
    helper = Path(__file__).with_name("_listeners.py")
    ray = _in_namespace(
        f"sh scripts/ensure_ray.sh start >&2 && {sys.executable} {helper} {' '.join(SERVICES)}"
        " && read _", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert ray.stdout is not None and ray.stdin is not None
        line = ray.stdout.readline()  # Ray is up and listed; it keeps running until we answer
        host = listeners(*SERVICES)
        ray.stdin.write("\n")
        ray.stdin.flush()
        _, err = ray.communicate(timeout=300)
    finally:
        if ray.poll() is None:
            ray.kill()
    assert line, f"the Ray head did not start in its namespace: {err[-2000:]}"
    inside = json.loads(line)
    # not vacuous: the head's GCS port and PostgreSQL's port were listed
    assert any(f":{RAY_PORT} " in s for s in inside["listening"]), inside
    assert any(f":{PG_PORT} " in s for s in host["listening"]), host
    assert inside["exposed"] == [], inside
    assert host["exposed"] == [], host
    # and nothing of Ray's leaked into this machine's namespace
    assert not any("gcs_server" in s or "raylet" in s for s in host["listening"]), host

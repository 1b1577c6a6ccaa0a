"""``lmalloc run`` checks its budget before any work: a refusal leaves no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmalloc.cli import register
from lmalloc.cost.budget import check_before_work
from lmalloc.errors import UserError

app = register()


@pytest.mark.parametrize(("args", "message"), [
    (["--hardware", "cpu", "--deploy-memory", "1B"], "deploy memory 1 bytes cannot hold any "
                                                     "model"),
    (["--hardware", "cpu", "--budget", "$500"], "needs a price per device-hour and the "
                                                "hardware profile cpu"),
    (["--budget", "8xH100:24h", "--hardware", "cpu"], "the budget names 8xh100-sxm but "
                                                      "--hardware is cpu"),
    (["--hardware", "cpu", "--budget", "mem=4GB"], "gives neither time nor compute"),
    (["--budget", "8xH100:24h"], "the budget names 8xh100-sxm but no --hardware is given"),
])
def test_run_refuses_a_bad_budget_before_any_work(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    root = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--run", str(root), *args])
    assert res.exit_code != 0
    assert message in str(res.exception), res.exception
    assert not root.exists()  # nothing prepared, nothing profiled


def test_a_good_budget_passes() -> None:
    b = check_before_work("10m,deploy=2MB", "cpu", min_deploy_bytes=25_000)
    assert b.seconds == 600 and b.deploy_bytes == 2e6
    b = check_before_work("8xH100:24h", "8xH100", min_deploy_bytes=25_000)
    assert b.devices == 8
    with pytest.raises(UserError, match="deploy memory"):
        check_before_work("10m", "cpu", min_deploy_bytes=25_000).deploy_bytes or \
            check_before_work("10m,deploy=10KB", "cpu", min_deploy_bytes=25_000)


def test_a_hardware_named_budget_without_hardware_says_what_to_use() -> None:
    """``8xH100:24h`` alone: `lmalloc run` would size the plan for 8 H100s and train on this
    machine; the refusal names both and the two commands that do what was meant."""
    with pytest.raises(UserError) as e:
        check_before_work("8xH100:2h,mem=40GB", None, min_deploy_bytes=25_000)
    msg = str(e.value)
    assert "would measure this machine and train here, on a plan sized for 8xh100-sxm" in msg
    assert "--budget 2h,mem=40GB --hardware 8xh100-sxm" in msg  # the budget's own time kept
    assert "lmalloc plan --from RUN --budget 8xH100:2h,mem=40GB" in msg
    with pytest.raises(UserError, match="--budget 2h --hardware 8xh100-sxm"):
        check_before_work("8xH100:2h", "cpu", min_deploy_bytes=25_000)
    b = check_before_work("8xH100:2h", "8xh100-sxm", min_deploy_bytes=25_000)  # agreeing
    assert (b.hardware, b.devices, b.seconds) == ("h100-sxm", 8, 7200)


def test_planning_for_named_hardware_is_still_allowed() -> None:
    """Planning (no training here) reads a hardware-named budget as before."""
    from lmalloc.cost.budget import parse_budget

    b = parse_budget("8xH100:24h")
    assert (b.hardware, b.devices, b.seconds) == ("h100-sxm", 8, 86400)

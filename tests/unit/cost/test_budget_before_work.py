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
    (["--deploy-memory", "1B"], "deploy memory 1 bytes cannot hold any model"),
    (["--budget", "$500"], "needs a price per device-hour and the hardware profile cpu"),
    (["--budget", "8xH100:24h", "--hardware", "cpu"], "the budget names 8xh100-sxm but "
                                                      "--hardware is cpu"),
    (["--budget", "mem=4GB"], "gives neither time nor compute"),
])
def test_run_refuses_a_bad_budget_before_any_work(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    root = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--run", str(root), "--hardware", "cpu", *args]
                             if "--hardware" not in args else ["run", "--run", str(root), *args])
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

"""The shared-study rules without a server: URLs in messages, the driver a ``postgresql://``
URL means, the recorded search space and the refusal of another one (on SQLite, which
follows the same rules), and no partial study left behind. Fast; no PostgreSQL needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from lmalloc.errors import UserError
from lmalloc.search import storage as stg
from lmalloc.search import study as st
from lmalloc.search.space import SearchSpace

SPACE = SearchSpace.from_dict({"params": {
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "schedule": {"type": "categorical", "choices": ["cosine", "wsd"]},
}}).to_dict()


def settings(tmp_path: Path, space: dict[str, Any] = SPACE, **kw: Any) -> st.SearchSettings:
    return st.SearchSettings(run_dir=str(tmp_path), space=space, base_model={},
                             base_train={"max_tokens": 1000}, strategy="random", **kw)


def test_messages_mask_the_password() -> None:
    assert stg.display_url("postgresql+psycopg://u:s3cret@h:5/db") == \
        "postgresql+psycopg://u:***@h:5/db"
    assert stg.display_url("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(UserError, match=r"'postgresql://u:\*\*\*@127.0.0.1:1/db'") as e:
        st.open_storage("postgresql://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(e.value)


def test_postgresql_url_means_the_extras_driver() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    try:
        import psycopg2  # noqa: F401

        pytest.skip("psycopg2 is installed: plain postgresql:// keeps SQLAlchemy's default")
    except ImportError:
        pass
    assert stg._driver_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert stg._driver_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert stg._driver_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert stg._driver_url("mysql://u@h/db") == "mysql://u@h/db"


def test_bad_heartbeat_setting_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(stg.GRACE_ENV, "soon")
    with pytest.raises(UserError, match="LMALLOC_HEARTBEAT_GRACE"):
        st.open_storage("postgresql://u@127.0.0.1:1/db")


def test_space_differences_name_what_changed() -> None:
    other = {"params": {**SPACE["params"], "lr": {**SPACE["params"]["lr"], "high": 0.03},
                        "wd": {"type": "float", "low": 0.0, "high": 0.1, "log": False}},
             "grid_points": SPACE["grid_points"]}
    other["params"].pop("schedule")
    diff = stg.space_differences(SPACE, other)
    assert diff[0] == "parameters only in the study: schedule"
    assert diff[1] == "parameters only in this command's space: wd"
    assert diff[2].startswith('lr is {"high":0.01,') and '{"high":0.03,' in diff[2]
    assert stg.space_differences(SPACE, SPACE) == []


def test_a_study_of_another_space_is_refused_untouched(tmp_path: Path) -> None:
    study = st.load_study(settings(tmp_path))
    assert study.user_attrs["space"] == SPACE
    study.enqueue_trial({"lr": 2e-3, "schedule": "wsd"})
    other = {**SPACE, "params": {"lr": SPACE["params"]["lr"]}}
    with pytest.raises(UserError, match="another search: parameters only in the study: "
                                        "schedule"):
        st.load_study(settings(tmp_path, space=other, pruner="none"))
    with pytest.raises(UserError, match=r"the study has 1 objective\(s\), this command 2"):
        st.load_study(settings(tmp_path, second_objective="flops"))
    again = optuna.load_study(study_name=st.STUDY_NAME, storage=st.storage_url(tmp_path, None))
    assert again.user_attrs == study.user_attrs and len(again.trials) == 1
    assert st.load_study(settings(tmp_path, space=other), check_space=False).trials  # --status


def test_an_old_study_gets_its_space_recorded(tmp_path: Path) -> None:
    url = st.storage_url(tmp_path, None)
    optuna.create_study(study_name=st.STUDY_NAME, storage=url)  # made before spaces were kept
    assert st.load_study(settings(tmp_path)).user_attrs["space"] == SPACE


def test_no_partial_study_when_setting_up_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(st, "_label_study", broken)
    with pytest.raises(RuntimeError, match="went away"):
        st.load_study(settings(tmp_path))
    assert optuna.get_all_study_names(st.storage_url(tmp_path, None)) == []

"""``lmalloc run`` with a deployment limit: the precision law is measured on the ladder's own
models, the plan chooses size and bits under the limit, and the final model is compressed to
it, with the prediction checked against what compression achieved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _pipeline_run import options

from lmalloc.model.accounting import stored_bytes
from lmalloc.model.config import GPTConfig
from lmalloc.run import run_pipeline
from lmalloc.rundir import RunDir


@pytest.mark.slow
def test_run_plans_and_compresses_to_the_deployment_limit(finished_run: Path,
                                                          tiny_corpus_dir: Path,
                                                          tmp_path: Path) -> None:
    free = json.loads((finished_run / "plan.json").read_text())
    limit = int(0.5 * stored_bytes(GPTConfig.from_dict(free["model"])))  # fp32 won't fit
    opts = options(tiny_corpus_dir)
    root = tmp_path / "deploy"
    summary = run_pipeline(root, options(tiny_corpus_dir, budget=f"{opts.budget},deploy={limit}B"))
    run = RunDir(root)
    stages = list(dict.fromkeys(row["stage"] for row in run.manifest()["ledger"]))  # in order
    assert stages.index("fit") < stages.index("precision") < stages.index("plan")
    assert stages.index("eval") < stages.index("compress") < stages.index("summary")
    precision = json.loads(run.path("precision.json").read_text())
    assert {m["bits"] for m in precision["measurements"]} == {8, 4, 3, 2}
    plan = json.loads(run.path("plan.json").read_text())
    shipped = plan["deploy"]
    cfg = GPTConfig.from_dict(plan["model"])
    assert shipped["fits"] and shipped["bytes"] <= limit
    assert shipped["bytes"] == stored_bytes(cfg, shipped["bits"])
    if precision["law"] is None:  # then nothing prices quantizing: only floats may ship
        assert shipped["bits"] is None
    d = summary["deploy"]
    assert d["achieved"]["size_bytes"] <= limit
    assert (root / "compressed" / "model.safetensors").stat().st_size > 0
    loss = d["predicted"]["loss"]
    assert d["within_interval"] == (loss["low"] <= d["achieved"]["loss"] <= loss["high"])
    assert {"precision", "compress"} <= set(run.manifest()["stages"])

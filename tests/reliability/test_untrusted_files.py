"""Untrusted files: nothing read back from disk is unpickled, a checkpoint holding a pickle
payload is refused with a UserError (and the payload never runs), and paths recorded in run
artifacts cannot escape the run directory."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from lmalloc.errors import UserError
from lmalloc.rundir import RunDir, atomic_write_json, safe_join

SRC = Path(__file__).resolve().parents[2] / "src" / "lmalloc"


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader ran attacker code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _tiny():
    from lmalloc.model import GPTConfig
    from lmalloc.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, n_layer=1, n_head=2, d_model=16, seq_len=8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 32, (2, 8))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    return model, opt


def _pickle_bomb(path: Path, marker: Path) -> None:
    torch.save({"state": _Payload(marker), "weights": torch.zeros(2)}, path)


def test_no_loader_in_the_library_can_unpickle():
    offenders = []
    for py in SRC.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in m.group(0):
                offenders.append(f"{py}: {m.group(0)}")
        for pat in (r"^\s*import pickle", r"^\s*from pickle", r"pickle\.loads?\(",
                    r"allow_pickle\s*=\s*True", r"import dill", r"joblib\.load"):
            if re.search(pat, text, re.M):
                offenders.append(f"{py}: {pat}")
    assert not offenders, offenders


@pytest.mark.parametrize("target", ["optimizer.safetensors", "model.safetensors"])
def test_checkpoint_with_pickle_payload_is_refused(tmp_path, target):
    from lmalloc.train.checkpoint import full_state, load_checkpoint, write_checkpoint

    model, opt = _tiny()
    ckpt = write_checkpoint(tmp_path / "ckpt", *full_state(model, opt), {"step": 1})
    marker = tmp_path / "PWNED"
    _pickle_bomb(ckpt / target, marker)
    fresh, fresh_opt = _tiny()
    with pytest.raises(UserError, match=re.escape(target)):
        load_checkpoint(ckpt, fresh, fresh_opt)
    assert not marker.exists(), "the pickle payload ran"


def test_run_model_with_pickle_weights_is_refused(tmp_path):
    from lmalloc.model.io import WEIGHTS, load_model, model_dir, save_model

    model, _ = _tiny()
    save_model(model, tmp_path / "final")
    weights = model_dir(tmp_path / "final") / WEIGHTS
    marker = tmp_path / "PWNED"
    _pickle_bomb(weights, marker)
    with pytest.raises(UserError, match="safetensors"):
        load_model(tmp_path / "final")
    assert not marker.exists()


def test_checkpoint_state_json_cannot_smuggle_a_pickle(tmp_path):
    """state.json is JSON: a pickle there is just a corrupt file (UserError), never unpickled."""
    from lmalloc.train.checkpoint import STATE_FILE, full_state, load_checkpoint, write_checkpoint

    model, opt = _tiny()
    ckpt = write_checkpoint(tmp_path / "ckpt", *full_state(model, opt), {"step": 1})
    marker = tmp_path / "PWNED"
    _pickle_bomb(ckpt / STATE_FILE, marker)
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(ckpt, *_tiny())
    assert not marker.exists()


# -- paths cannot escape the run directory ---------------------------------------------------
@pytest.mark.parametrize("rel", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x",
                                 "data/../../outside"])
def test_safe_join_refuses_escapes(tmp_path, rel):
    with pytest.raises(UserError, match="escapes"):
        safe_join(tmp_path / "run", rel)


def test_safe_join_refuses_symlink_out(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to(tmp_path)
    with pytest.raises(UserError, match="escapes"):
        safe_join(run, "link/secret")
    assert safe_join(run, "data/x") == (run / "data" / "x").resolve()


@pytest.mark.parametrize("rel", ["../secret", "/etc/hostname"])
def test_manifest_artifact_paths_cannot_escape(tmp_path, rel):
    run = RunDir(tmp_path / "run")
    (tmp_path / "secret").write_text("x")
    atomic_write_json(run.manifest_path, {"stages": {}, "ledger": [],
                                          "artifacts": {rel: "0" * 64}})
    with pytest.raises(UserError, match="escapes"):
        run.verify_artifact(rel)
    with pytest.raises(UserError, match="escapes"):
        run.record_artifact(rel)


def test_shard_paths_in_data_json_cannot_escape(tmp_path):
    import numpy as np

    from lmalloc.data.shards import DATA_JSON, TokenData, write_token_splits

    data = tmp_path / "run" / "data"
    arr = np.arange(64, dtype=np.uint16) % 30
    write_token_splits(data, {"train": [arr], "val": [arr]}, vocab_size=32, eot_id=31,
                       split_bytes={"train": 64, "val": 64})
    outside = tmp_path / "outside.bin"
    outside.write_bytes(arr.tobytes())
    meta = json.loads((data / DATA_JSON).read_text())
    meta["splits"]["train"]["shards"][0]["path"] = "../../outside.bin"
    (data / DATA_JSON).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="escapes"):
        TokenData(data).split("train")


@pytest.mark.parametrize("name", ["/dev/zero", "../../outside/file", "model.safetensors/../x"])
def test_checkpoint_checksum_names_stay_in_the_folder(tmp_path, name):
    """state.json's sha256 map names files to hash: a device (which would hang the reader) or a
    path out of the folder is refused before anything is opened."""
    from lmalloc.rundir import verify_files
    from lmalloc.train.checkpoint import STATE_FILE, full_state, write_checkpoint

    model, opt = _tiny()
    ckpt = write_checkpoint(tmp_path / "run" / "ckpt", *full_state(model, opt), {"step": 1})
    outside = tmp_path / "outside" / "file"
    outside.parent.mkdir()
    outside.write_text("secret")
    state = json.loads((ckpt / STATE_FILE).read_text())
    state["sha256"] = {name: "0" * 64}
    (ckpt / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="refusing to read it"):
        verify_files(ckpt)


def test_report_does_not_write_through_a_plots_link_out(tmp_path):
    from lmalloc.report.artifacts import load_run
    from lmalloc.report.plots import make_plots

    run = tmp_path / "run"
    RunDir(run).record_stage("prepare")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run / "plots").symlink_to(outside)
    with pytest.raises(UserError, match="escapes the run directory"):
        make_plots(load_run(run), studies=[])
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(("command", "sub", "workers"), [
    ("search", "trials", "1"), ("search", "trials", "2"), ("train", "final", None)])
def test_no_stage_writes_through_a_link_out_of_the_run(tiny_run, tmp_path, command, sub,
                                                       workers):
    """A run folder whose ``trials/`` or ``final/`` links elsewhere: the stage that writes
    there exits 2 naming the path, and nothing appears on the other side (the search stops
    rather than failing trial after trial)."""
    from lmalloc.testing.cli import invoke

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tiny_run / sub).symlink_to(outside, target_is_directory=True)
    recipe = str(SRC / "configs" / "tiny.toml")
    args = (["search", "--trials", "3", "--strategy", "random", "--pruner", "none",
             "--workers", workers] if command == "search" else ["train"])
    code, out = invoke(*args, "--run", str(tiny_run), "--recipe", recipe)
    assert code == 2, out
    assert "refusing to write" in out and f"{tiny_run / sub}" in out
    assert "leads out of the run folder" in out
    assert list(outside.iterdir()) == []


def test_lmalloc_run_stops_at_a_trials_link_out(tiny_corpus_dir, tmp_path):
    """The whole pipeline: prepare and split run, the search's first write into the linked
    ``trials/`` ends ``lmalloc run`` with exit 2, and nothing is written outside."""
    from lmalloc.testing.cli import invoke

    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    outside.mkdir()
    run.mkdir()
    (run / "trials").symlink_to(outside, target_is_directory=True)
    code, out = invoke("run", "--run", str(run), "--data", str(tiny_corpus_dir), "--budget",
                       "10m", "--hardware", "cpu", "--vocab-size", "300")
    assert code == 2, out
    assert f"refusing to write {run / 'trials'}" in out, out
    assert list(outside.iterdir()) == []
    assert (run / "data" / "data.json").exists()  # it got as far as the search

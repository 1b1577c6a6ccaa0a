"""``lmalloc generate`` and ``lmalloc export`` on a run saved in the checkpoint layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT
from lmalloc.model.io import load_model, save_model
from lmalloc.testing.cli import invoke


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a tiny corpus for a tiny tokenizer, tiny and small. " * 5],
                            trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """runs/NAME with data/tokenizer.json and final/{config.json, checkpoint/}."""
    torch.manual_seed(0)
    root = tmp_path / "runs" / "demo"
    _tokenizer(root / "data" / "tokenizer.json")
    cfg = GPTConfig(vocab_size=280, n_layer=1, n_head=2, d_model=16, seq_len=32,
                    tie_embeddings=False, init_std=0.3)
    save_model(GPT(cfg), root / "final", extra={"train": {"lr": 1e-3}})
    return root


def test_load_model_round_trip(run: Path) -> None:
    model, cfg = load_model(run)
    again, _ = load_model(run / "final")
    assert cfg.d_model == 16 and not model.training
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_tied_round_trip(tmp_path: Path) -> None:
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, d_model=16, seq_len=8))
    save_model(model, tmp_path)  # safetensors' save_model stores a tied weight once
    loaded, cfg = load_model(tmp_path)
    assert cfg.tie_embeddings and loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_tied_checkpoint_without_wte_key_loads(tmp_path: Path) -> None:
    cfg = GPTConfig(vocab_size=40, n_layer=1, n_head=2, d_model=16, seq_len=8)
    model = GPT(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "transformer.wte.weight"}
    (tmp_path / "checkpoint").mkdir()
    save_file(state, str(tmp_path / "checkpoint" / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded.transformer.wte.weight, model.lm_head.weight)


def test_foreign_or_mismatched_checkpoint_is_user_error(run: Path, tmp_path: Path) -> None:
    cfg = json.loads((run / "final" / "config.json").read_text())
    cfg["model"]["d_model"] = 32
    (run / "final" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"mismatching shapes .*\(280, 16\) vs config \(280, 32\)"):
        load_model(run)
    save_file({"foo": torch.zeros(2)}, str(run / "final" / "checkpoint" / "model.safetensors"))
    cfg["model"]["d_model"] = 16
    (run / "final" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unexpected tensors"):
        load_model(run)
    (run / "final" / "checkpoint" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="safetensors"):
        load_model(run)
    with pytest.raises(UserError, match="no trained model"):
        load_model(tmp_path)


def test_generate_command(run: Path) -> None:
    args = ["generate", "--run", str(run), "--prompt", "a tiny", "--max-tokens", "12",
            "--temperature", "0.9", "--top-k", "20", "--top-p", "0.9", "--seed", "3", "--json"]
    code, out = invoke(*args)
    assert code == 0, out
    result = json.loads(out)
    assert result["prompt"] == "a tiny" and 1 <= result["new_tokens"] <= 12
    assert json.loads(invoke(*args)[1])["text"] == result["text"]  # seeded: reproducible
    code, out = invoke("generate", "--run", str(run), "--prompt", "tiny", "--max-tokens", "4")
    assert code == 0 and out.startswith("tiny")


def test_generate_bad_input_exits_2(run: Path, tmp_path: Path) -> None:
    # (main() maps UserError to exit 2; tests/unit/test_cli.py checks that in a subprocess)
    code, out = invoke("generate", "--run", str(tmp_path / "nope"), "--prompt", "x")
    assert code == 2 and "does not exist" in out
    code, _ = invoke("generate", "--run", str(run), "--prompt", "x", "--top-p", "2")
    assert code == 2


def test_export_command(run: Path, tmp_path: Path) -> None:
    code, out = invoke("export", "--run", str(run), "--format", "hf", "--json")
    assert code == 0, out
    result = json.loads(out)
    hf = Path(result["out"])
    assert hf == run / "final" / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(result["files"])
    assert json.loads((hf / "config.json").read_text())["eos_token_id"] == 0
    code, out = invoke("export", "--run", str(run), "--out", str(tmp_path / "x"))
    assert code == 0 and (tmp_path / "x" / "model.safetensors").exists()
    code, _ = invoke("export", "--run", str(run), "--format", "gguf")
    assert code == 2

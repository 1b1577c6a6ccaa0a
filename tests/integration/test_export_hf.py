"""Export to Hugging Face Llama: transformers loads the folder and gives our logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmalloc.model.config import GPTConfig
from lmalloc.model.export import export_hf
from lmalloc.model.gpt import GPT

transformers = pytest.importorskip("transformers")


def tiny_tokenizer(path: Path) -> Path:
    """A byte-level BPE trained in milliseconds on a tiny text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["the quick brown fox jumps over the lazy dog. " * 20, "hello world, hello model."]
    tok.train_from_iterator(text, trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.mark.parametrize("kw", [dict(), dict(tie_embeddings=False), dict(n_kv_head=2),
                                dict(mup_base_width=16, n_kv_head=1)])
def test_transformers_loads_export_with_same_logits(
    kw: dict[str, object], tokenizer_file: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=300, n_layer=2, n_head=4, d_model=32, seq_len=32,
                    init_std=0.2, **kw)  # type: ignore[arg-type]
    model = GPT(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm mapping would show
        for n, p in model.named_parameters():
            if "ln" in n:
                p.uniform_(0.5, 1.5)
    out = export_hf(model, cfg, tokenizer_file, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        ours = model(idx)[0]
        theirs = hf(idx).logits
    assert ours.abs().max() > 0.1  # logits are not trivially ~0
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)

    tok = transformers.AutoTokenizer.from_pretrained(out)
    from tokenizers import Tokenizer

    text = "hello quick fox"
    assert tok(text)["input_ids"] == Tokenizer.from_file(str(tokenizer_file)).encode(text).ids
    assert tok.eos_token == "<|endoftext|>"


def test_export_from_state_dict_and_replaces_atomically(tokenizer_file: Path,
                                                        tmp_path: Path) -> None:
    cfg = GPTConfig(vocab_size=300, n_layer=1, n_head=2, d_model=16, seq_len=16)
    model = GPT(cfg)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_hf(model.state_dict(), cfg, None, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

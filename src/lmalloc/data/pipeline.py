"""``prepare``: a corpus in, a data folder of token shards out (``runs/<name>/data/``).

Three streaming passes, so memory holds per-document signatures, never the corpus:

1. read → clean → filter → exact and near-duplicate removal (before the split, so a
   duplicate never lands on both sides); kept documents go to a temporary spool file inside
   the output's temporary folder (disk, about the size of the kept text, removed at the end);
2. train the byte-level BPE tokenizer from an iterator over the spool, its first
   ``tokenizer_train_bytes`` (or load ``--tokenizer``);
3. encode the spool with ``encode_batch_fast`` (multithreaded, in Rust; batches bounded in
   documents and characters) and pack tokens into shards, ``<|endoftext|>`` after each
   document, hashing each shard as it is written.

The train/val split is by a seeded hash of each kept document's text: a document is in
``val`` when its hash, read as a number in [0, 1), is below ``val_fraction``. If no document
falls there, the one with the smallest hash goes to ``val`` (so ``val`` is never empty); at
least two documents must survive cleaning.

Reuse: the result is keyed by a hash of the config (with the tokenizer file's sha256), the
lmalloc version and each source file's resolved path, size and modification time (not its
content, which would mean re-reading the corpus). Rerunning with the same key finds the
existing folder and returns it with ``"reused": True``. Everything is built in a temporary
folder renamed into place at the end, so a failure leaves no half-written output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmalloc import __version__
from lmalloc.data.builtin import builtin_files
from lmalloc.data.clean import Cleaner
from lmalloc.data.config import PrepareConfig
from lmalloc.data.dedup import Deduplicator
from lmalloc.data.pack import DocSpool, ShardWriter
from lmalloc.data.progress import Progress
from lmalloc.data.shards import DATA_JSON, FORMAT_VERSION, token_dtype, write_data_json
from lmalloc.data.sources import SourceStats, discover, fingerprint, iter_documents
from lmalloc.data.tokenizer import EOT, load_tokenizer, train_tokenizer
from lmalloc.errors import UserError
from lmalloc.rundir import atomic_dir, read_json, sha256_file

ENCODE_BATCH_CHARS = 2_000_000  # at most this much text per encode_batch call

log = logging.getLogger(__name__)


def prepare(
    sources: Sequence[str | Path] | None, out_dir: str | Path,
    config: PrepareConfig | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Turn ``sources`` (files or folders; none: the built-in corpus) into ``out_dir``.

    Returns the content of ``data.json`` plus ``"reused"`` (whether an identical earlier
    result was kept) and ``"seconds"``.
    """
    t0 = time.perf_counter()
    cfg = config or PrepareConfig()
    out = Path(out_dir)
    builtin = not sources
    files = builtin_files() if builtin else discover(list(sources or []), cfg.include,
                                                      cfg.exclude)
    if not files:
        raise UserError(f"no supported files (.txt .md .py .jsonl .parquet, optionally .gz/.zst)"
                        f" found in {[str(s) for s in sources or []]}")
    key = content_key(files, cfg)
    old = _reusable(out, key)
    if old is not None:
        _warn(old.get("warnings", []))
        return {**old, "reused": True, "seconds": time.perf_counter() - t0}
    with atomic_dir(out) as tmp:
        meta = _build(files, tmp, cfg, progress)
        meta["warnings"] = _check_built(meta)  # a refusal leaves nothing behind
        meta.update(content_key=key, key_basis="config + lmalloc version + path/size/mtime "
                    "of each source file", sources={"builtin": builtin, "files": len(files),
                                                    "first": [str(f) for f in files[:5]]})
        write_data_json(tmp, meta)
    _warn(meta["warnings"])
    return {"format_version": FORMAT_VERSION, **meta, "reused": False,
            "seconds": time.perf_counter() - t0}


def _warn(messages: list[str]) -> None:
    for m in messages:
        log.warning(m)


def content_key(files: Sequence[Path], cfg: PrepareConfig) -> str:
    """The reuse key: config, version and each file's path, size and mtime."""
    conf = cfg.to_dict()
    if cfg.tokenizer is not None:
        conf["tokenizer"] = sha256_file(load_tokenizer_path(cfg.tokenizer))
    blob = json.dumps({"config": conf, "version": __version__, "format": FORMAT_VERSION,
                       "files": fingerprint(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_tokenizer_path(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"tokenizer {path!r} does not exist")
    return p


def _reusable(out: Path, key: str) -> dict[str, Any] | None:
    """The existing ``data.json`` if it has ``key`` and its shards are all there, whole."""
    if not (out / DATA_JSON).is_file():
        return None
    try:
        meta: dict[str, Any] = read_json(out / DATA_JSON)
    except UserError:
        return None
    if meta.get("content_key") != key or meta.get("format_version") != FORMAT_VERSION:
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in meta["splits"].values():
        for s in split["shards"]:
            p = out / s["path"]
            if not p.is_file() or p.stat().st_size != s["tokens"] * itemsize:
                return None
    return meta


def _build(files: list[Path], tmp: Path, cfg: PrepareConfig, progress: bool) -> dict[str, Any]:
    spool = DocSpool(tmp / ".kept.spool")
    try:
        scan = _scan(files, spool, cfg, progress)
        val_idx = _choose_val(scan["scores"], cfg.val_fraction)
        tok, tok_info = _tokenizer(spool, cfg, tmp)
        splits = _encode(spool, tok, val_idx, cfg, tmp, progress)
    finally:
        spool.remove()
    vocab = tok.get_vocab_size()
    return {
        "vocab_size": vocab, "eot_id": tok.token_to_id(EOT), "dtype": token_dtype(vocab).name,
        "splits": splits, "tokenizer": tok_info, "config": cfg.to_dict(),
        "counts": {**scan["stats"], "documents_kept": spool.count,
                   "tokens": sum(s["tokens"] for s in splits.values())},
        "removed": scan["removed"], "modified": scan["modified"], "dedup": scan["dedup"],
        "lmalloc_version": __version__,
    }


def _scan(files: list[Path], spool: DocSpool, cfg: PrepareConfig, progress: bool
          ) -> dict[str, Any]:
    """Pass 1: read, clean, filter, deduplicate; spool the kept documents."""
    stats = SourceStats()
    cleaner = Cleaner(cfg)
    dedup = Deduplicator(cfg.dedup_exact, cfg.dedup_near, cfg.num_perm, cfg.shingle_size,
                         cfg.jaccard_threshold, cfg.seed)
    removed = {"exact_duplicate": 0, "near_duplicate": 0}
    scores: list[float] = []
    split_key = cfg.seed.to_bytes(8, "little")
    with Progress("read, clean, dedup", progress) as bar:
        for doc in iter_documents(files, stats, text_field=cfg.text_field,
                                  parquet_column=cfg.parquet_column,
                                  chunk_bytes=cfg.chunk_bytes, max_bytes=cfg.max_bytes):
            bar.advance(len(doc))
            text = cleaner(doc)
            if text is None:
                continue
            why = dedup.check(text)
            if why is not None:
                removed[why] += 1
                continue
            spool.append(text)
            h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=split_key).digest()
            scores.append(int.from_bytes(h, "little") / 2**64)
    all_removed = {**dict(cleaner.removed), **removed}
    _check_scan(stats, all_removed, spool.count, cfg, files)
    return {"stats": stats.to_dict(), "removed": all_removed,
            "modified": dict(cleaner.modified), "dedup": dedup.stats(), "scores": scores}


def _check_scan(stats: SourceStats, removed: dict[str, int], kept: int, cfg: PrepareConfig,
                files: list[Path]) -> None:
    """Turn an unusable scan into a clear :class:`UserError`."""
    if stats.jsonl_lines and stats.malformed_jsonl > cfg.max_malformed_frac * stats.jsonl_lines:
        raise UserError(
            f"{stats.malformed_jsonl} of {stats.jsonl_lines} JSONL lines are malformed (not a "
            f"JSON object with a string {cfg.text_field!r} field), more than max_malformed_frac"
            f" = {cfg.max_malformed_frac}; fix the files or choose the field with --text-field"
        )
    if stats.binary_files and stats.binary_files == stats.files:
        raise UserError(f"every source file is binary (NUL bytes), e.g. {files[0]}: nothing "
                        "to read as text")
    if stats.documents == 0:
        raise UserError(f"empty corpus: the {stats.files} source file(s) hold no documents")
    if stats.documents == 1 and kept == 1:
        raise UserError(
            f"too few documents: the {stats.files} source file(s) ({stats.bytes:,} bytes) hold "
            f"{stats.documents} document (each text file is one document, each JSONL line or "
            "parquet row one); at least 2 are needed, one goes to validation: split the text "
            "into several files"
        )
    if kept < 2:
        what = ", ".join(f"{k}: {v}" for k, v in removed.items() if v) or "nothing"
        raise UserError(
            f"{'empty corpus' if kept == 0 else 'too few documents'} after filtering: {kept} of "
            f"{stats.documents} documents kept, "
            f"at least 2 are needed (one for validation); removed by filter: {what}. Loosen "
            "those filters (e.g. --min-chars) or add text"
        )


# Fewer training tokens than this cannot train anything (4 sequences of the tiny recipe).
MIN_TRAIN_TOKENS = 256
# A filter that drops more than this share of the documents is worth a warning.
DROP_WARN_FRACTION = 0.25


def _check_built(meta: dict[str, Any]) -> list[str]:
    """Refuse a result that cannot train; the warnings (with counts) for surprising ones."""
    c, train = meta["counts"], meta["splits"]["train"]["tokens"]
    if train < MIN_TRAIN_TOKENS:
        raise UserError(
            f"only {train:,} training tokens ({c['documents_kept']} documents, {c['bytes']:,} "
            f"bytes read): at least {MIN_TRAIN_TOKENS} are needed to train anything; add text"
        )
    out = []
    if c["invalid_utf8"]:
        out.append(f"{c['invalid_utf8']:,} invalid UTF-8 sequences in the sources were replaced "
                   "with U+FFFD: is the corpus in another encoding (e.g. Latin-1)? Convert it "
                   "first (iconv -f latin1 -t utf-8)")
    dropped = c["documents"] - c["documents_kept"]
    if c["documents"] and dropped > DROP_WARN_FRACTION * c["documents"]:
        why = ", ".join(f"{k} {v:,}" for k, v in meta["removed"].items() if v)
        out.append(f"cleaning and deduplication removed {dropped:,} of {c['documents']:,} "
                   f"documents ({dropped / c['documents']:.0%}): {why}")
    return out


def _choose_val(scores: list[float], frac: float) -> set[int]:
    """Documents whose hash score falls below ``frac``; the lowest one if none does."""
    arr = np.asarray(scores)
    val = set(np.flatnonzero(arr < frac).tolist()) or {int(arr.argmin())}
    if len(val) == len(arr):  # a tiny corpus: keep the highest-scoring document for train
        val.discard(int(arr.argmax()))
    return val


def _tokenizer(spool: DocSpool, cfg: PrepareConfig, tmp: Path) -> tuple[Any, dict[str, Any]]:
    """Pass 2: the tokenizer, trained on the spool (or loaded), saved as tokenizer.json."""
    if cfg.tokenizer is not None:
        tok = load_tokenizer(cfg.tokenizer)
        source: str | None = str(Path(cfg.tokenizer).resolve())
    else:
        docs: Iterator[str] = iter(spool)
        if cfg.tokenizer_train_bytes:
            docs = _capped(docs, cfg.tokenizer_train_bytes)
        tok = train_tokenizer(docs, cfg.vocab_size, cfg.min_frequency, length=spool.count)
        source = None
    tok.save(str(tmp / "tokenizer.json"))
    return tok, {"path": "tokenizer.json", "trained": source is None, "source": source,
                 "vocab_size": tok.get_vocab_size(), "eot": EOT,
                 "sha256": sha256_file(tmp / "tokenizer.json")}


def _capped(docs: Iterator[str], limit: int) -> Iterator[str]:
    n = 0
    for d in docs:
        yield d
        n += len(d.encode("utf-8"))
        if n >= limit:
            return


def _encode(spool: DocSpool, tok: Any, val_idx: set[int], cfg: PrepareConfig, tmp: Path,
            progress: bool) -> dict[str, Any]:
    """Pass 3: encode in batches and pack into shards, routed by the split."""
    dtype = token_dtype(tok.get_vocab_size())
    eot = np.array([tok.token_to_id(EOT)], dtype=np.int64)
    writers = {s: ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
    # encode_batch_fast skips character offsets (unused here): ~2x faster, less memory.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    i = 0
    with Progress("tokenize, pack", progress) as bar:
        for batch in _batches(iter(spool), cfg.batch_docs, ENCODE_BATCH_CHARS):
            encs = encode(batch, add_special_tokens=False)
            for text, enc in zip(batch, encs, strict=True):
                ids = np.concatenate([np.asarray(enc.ids, dtype=np.int64), eot])
                w = writers["val" if i in val_idx else "train"]
                w.write(ids, len(text.encode("utf-8")))
                i += 1
                bar.advance(len(text))
    return {s: w.finish() for s, w in writers.items()}


def _batches(docs: Iterator[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    """Group documents for ``encode_batch``, bounded in count and in characters.

    The character bound is what keeps memory flat: the encodings of a batch (ids plus
    per-token objects in the tokenizer) are held at once, so a batch of many large documents
    would grow with the corpus.
    """
    buf: list[str] = []
    chars = 0
    for d in docs:
        buf.append(d)
        chars += len(d)
        if len(buf) >= max_docs or chars >= max_chars:
            yield buf
            buf, chars = [], 0
    if buf:
        yield buf


def prepare_run(
    run: str | Path, sources: Sequence[str | Path] | None,
    config: PrepareConfig | None = None, progress: bool = True,
) -> dict[str, Any]:
    """``prepare`` into ``runs/<name>/data/``, recorded in the run's manifest and ledger."""
    from lmalloc.rundir import RunDir

    rd = RunDir(run)
    result = prepare(sources, rd.data, config, progress)
    # the stage record last: it marks the stage done, so a kill before it redoes (and
    # re-records) the rest, which reuses the identical data at no cost
    rd.record_artifact("data/data.json")
    rd.charge("prepare", flops=0.0, seconds=result["seconds"], reused=result["reused"])
    rd.record_stage("prepare", content_key=result["content_key"], reused=result["reused"],
                    config=result["config"], counts=result["counts"], output="data")
    return result

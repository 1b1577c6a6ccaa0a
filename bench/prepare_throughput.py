"""Benchmark: end-to-end ``prepare`` throughput versus raw ``tokenizers`` batch encoding.

Peer: Hugging Face ``tokenizers`` ``encode_batch_fast`` (the offsets-free ``encode_batch``,
which ``prepare`` uses too) over the same documents, already in
memory, with the same tokenizer, in the same process, alternating with ``prepare`` (which also
reads, cleans, deduplicates with MinHash LSH, splits, packs and hashes shards). Reported:
medians of ``--repeats`` alternations and their ratio (target ≥ 0.5). ``prepare`` runs with
``tokenizer=`` the same trained tokenizer so both sides encode with it; one extra run that
trains the tokenizer is reported separately.

Memory: peak RSS of ``prepare`` in a fresh subprocess at two corpus sizes (one variant of the
base corpus and ``--scale`` variants of it, each letter-substituted so no copy is a duplicate
of another),
as the child's own ``resource.getrusage(RUSAGE_SELF)``: streaming means it should not grow
with size.

Usage: ``python bench/prepare_throughput.py [--corpus DIR] [--repeats 3] [--scale 4]``;
writes ``bench/results/prepare_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmalloc.data import PrepareConfig, prepare
from lmalloc.data.sources import SourceStats, discover, iter_documents

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))


def _docs(files: list[Path], cfg: PrepareConfig) -> list[str]:
    return list(iter_documents(files, SourceStats(), chunk_bytes=cfg.chunk_bytes))


def _encode_all(tok: Any, docs: list[str], batch: int) -> int:
    """The peer: batch encoding alone, with the same method and batch size prepare uses."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    n = 0
    for i in range(0, len(docs), batch):
        n += sum(len(e.ids) for e in encode(docs[i : i + batch], add_special_tokens=False))
    return n


def _variant(src: list[Path], dst: Path, k: int) -> None:
    """Copy ``src`` with letters substituted by a rotation ``k`` (a new, non-duplicate text)."""
    lo, up = string.ascii_lowercase, string.ascii_uppercase
    table = str.maketrans(lo + up, lo[k:] + lo[:k] + up[k:] + up[:k])
    dst.mkdir(parents=True, exist_ok=True)
    for f in src:
        with open(f, encoding="utf-8", errors="replace") as fi, \
                open(dst / f"{k}_{f.name}", "w", encoding="utf-8") as fo:
            for line in fi:
                fo.write(line.translate(table))


def _peak_rss_mb(corpus: Path, tokenizer: Path, out: Path) -> dict[str, float]:
    """Run prepare in a fresh process; it reports its own peak RSS (getrusage RUSAGE_SELF)."""
    code = ("import resource, sys, time; from lmalloc.data import PrepareConfig, prepare; "
            "t=time.perf_counter(); r=prepare([sys.argv[1]], sys.argv[2], "
            "PrepareConfig(tokenizer=sys.argv[3]), progress=False); "
            "print(r['counts']['bytes'], time.perf_counter()-t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code, str(corpus), str(out), str(tokenizer)],
                       capture_output=True, text=True, check=True)
    nbytes, secs, peak_kib = r.stdout.split()
    return {"corpus_mb": int(nbytes) / 1e6, "peak_rss_mb": int(peak_kib) / 1024,
            "seconds": float(secs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "wikitext-2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                    "prepare_throughput.json")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    cfg = PrepareConfig()
    files = discover([args.corpus])
    work = Path(tempfile.mkdtemp(prefix="lmalloc-bench-"))
    try:
        t = time.perf_counter()
        trained = prepare([args.corpus], work / "trained", cfg, progress=False)
        train_secs = time.perf_counter() - t
        tok_path = work / "trained" / "tokenizer.json"
        tok = Tokenizer.from_file(str(tok_path))
        docs = _docs(files, cfg)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        reuse = PrepareConfig(tokenizer=str(tok_path))
        prep_s, enc_s = [], []
        for i in range(args.repeats):  # alternate the two so drift hits both alike
            t = time.perf_counter()
            prepare([args.corpus], work / f"p{i}", reuse, progress=False)
            prep_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            _encode_all(tok, docs, cfg.batch_docs)
            enc_s.append(time.perf_counter() - t)
        del docs
        # Both sizes are made of variants, so they tokenize alike (a variant compresses worse
        # than the text the tokenizer was trained on) and only the size differs.
        small, big = work / "small", work / "big"
        _variant(files, small, 1)
        for k in range(args.scale):
            _variant(files, big, k + 1)
        rss = [_peak_rss_mb(small, tok_path, work / "rss1"),
               _peak_rss_mb(big, tok_path, work / "rss2")]
        mb = nbytes / 1e6
        result = {
            "corpus": str(args.corpus), "corpus_mb": mb, "repeats": args.repeats,
            "prepare_mb_s": mb / statistics.median(prep_s),
            "encode_batch_mb_s": mb / statistics.median(enc_s),
            "ratio": statistics.median(enc_s) / statistics.median(prep_s),
            "prepare_seconds": prep_s, "encode_seconds": enc_s,
            "prepare_with_tokenizer_training_mb_s": mb / train_secs,
            "peer": "tokenizers Tokenizer.encode_batch_fast (encode_batch if absent), "
                    f"batches of {cfg.batch_docs} documents, text already in memory",
            "counts": trained["counts"], "removed": trained["removed"],
            "peak_rss": rss, "machine": {"python": platform.python_version(),
                                         "cpus": os.cpu_count(),
                                         "loadavg_1m": os.getloadavg()[0]},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("counts", "removed")},
                     indent=2))


if __name__ == "__main__":
    main()

"""The run directory: paths, atomic writes, checksums and the manifest with its budget ledger.

Every artifact of every stage is written through :func:`atomic_write_bytes` (temp file, fsync,
rename) or :func:`atomic_dir` (temp folder, rename), so a killed process leaves either the old
artifact or the new one, never half of one. The manifest records what was run and, in its
ledger, what each stage spent (FLOPs and seconds, measured).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmalloc import __version__
from lmalloc.errors import UserError

MANIFEST = "manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp's 0600 becomes the mode a plain open() would give


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str], what: str | None = None) -> Any:
    """Read a JSON artifact; a missing or corrupt file is a :class:`UserError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what or 'file'} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"{what or 'file'} {path} is corrupt ({e}); delete it and rerun the stage that "
            "writes it"
        ) from None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``final`` only on success.

    An existing ``final`` is replaced only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_join(root: str | os.PathLike[str], rel: str | os.PathLike[str]) -> Path:
    """Join ``rel`` under ``root``, refusing any path that escapes it (``..``, absolute, links)."""
    root_r = Path(root).resolve()
    target = (root_r / rel).resolve()
    if target != root_r and root_r not in target.parents:
        raise UserError(f"path {str(rel)!r} escapes the run directory {root_r}")
    return target


class RunDir:
    """A run directory (``runs/<name>/``) and the manifest that records it.

    The layout is the one in DESIGN.md; stages ask this class for paths instead of building
    them, so the layout lives in one place.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def trial(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def path(self, rel: str) -> Path:
        """Resolve a path recorded in the manifest, refusing ones that escape the run."""
        return safe_join(self.root, rel)

    # -- manifest -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".manifest.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"lmalloc_version": __version__, "stages": {}, "ledger": [], "artifacts": {}}
        data: dict[str, Any] = read_json(self.manifest_path, "manifest")
        return data

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest under a lock and write it atomically."""
        with self._locked():
            m = self.manifest()
            m.update(fields)
            atomic_write_json(self.manifest_path, m)
            return m

    def record_stage(self, stage: str, **info: Any) -> None:
        """Mark ``stage`` as done with its info (config, versions, outputs)."""
        with self._locked():
            m = self.manifest()
            m.setdefault("stages", {})[stage] = {"finished_at": time.time(), **info}
            atomic_write_json(self.manifest_path, m)

    def record_artifact(self, rel: str) -> str:
        """Store the checksum of an artifact (path relative to the run) in the manifest."""
        digest = sha256_file(self.path(rel))
        with self._locked():
            m = self.manifest()
            m.setdefault("artifacts", {})[rel] = digest
            atomic_write_json(self.manifest_path, m)
        return digest

    def verify_artifact(self, rel: str) -> None:
        """Raise a :class:`UserError` if an artifact no longer matches its recorded checksum."""
        expected = self.manifest().get("artifacts", {}).get(rel)
        if expected is None:
            return
        p = self.path(rel)
        if not p.exists():
            raise UserError(f"{p} is missing; rerun the stage that writes it")
        if sha256_file(p) != expected:
            raise UserError(
                f"{p} does not match the checksum recorded in {self.manifest_path}: it was "
                "truncated or altered. Delete it and rerun the stage that writes it."
            )

    def charge(self, stage: str, flops: float, seconds: float, **extra: Any) -> None:
        """Add what a stage spent to the ledger (measured FLOPs and wall seconds)."""
        with self._locked():
            m = self.manifest()
            m.setdefault("ledger", []).append(
                {"stage": stage, "flops": float(flops), "seconds": float(seconds), **extra}
            )
            atomic_write_json(self.manifest_path, m)

    def spent(self, stage: str | None = None) -> dict[str, float]:
        """Total FLOPs and seconds charged so far (optionally for one stage)."""
        rows = [r for r in self.manifest().get("ledger", []) if stage in (None, r["stage"])]
        return {
            "flops": sum(r["flops"] for r in rows),
            "seconds": sum(r["seconds"] for r in rows),
        }

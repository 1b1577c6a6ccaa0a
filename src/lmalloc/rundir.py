"""The run directory: paths, atomic writes, checksums and the manifest with its budget ledger.

Every artifact of every stage is written through :func:`atomic_write_bytes` (temp file, fsync,
rename) or :func:`atomic_dir` (temp folder, rename), so a killed process leaves either the old
artifact or the new one, never half of one. The manifest records what was run and, in its
ledger, what each stage spent (FLOPs and seconds, measured).

A write that the file system refuses (disk full, quota, read-only, permission) is a
:class:`UserError` naming the path, raised after the temp file is removed: the previous
version of the artifact stays as it was. A write below a run folder that a symbolic link
would carry out of it (``trials/`` → elsewhere) is refused before anything is created
(:func:`confined`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
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


_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for the file system",
}


_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors) say it
_SQLITE_TEXT = {"database or disk is full": errno.ENOSPC,
                "attempt to write a readonly database": errno.EROFS}


def _disk_errno(e: BaseException) -> tuple[int, str | None] | None:
    """The refusing errno (and file, if known) behind ``e`` or anything in its cause chain:
    an ``OSError``, a Rust library's "(os error 28)", SQLite's "database or disk is full"."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _DISK_ERRORS:
            return cur.errno, cur.filename if isinstance(cur.filename, str) else None
        text = str(cur)
        m = _OS_ERROR_IN_TEXT.search(text)
        if m and int(m.group(1)) in _DISK_ERRORS:
            return int(m.group(1)), None
        for needle, code in _SQLITE_TEXT.items():
            if needle in text:
                return code, None
        cur = cur.__cause__ or cur.__context__
    return None


class DiskWriteError(UserError):
    """A write the file system refused; ``path`` is the artifact, ``code`` the errno."""

    def __init__(self, path: str | os.PathLike[str], code: int) -> None:
        self.path, self.code = str(path), code
        super().__init__(
            f"cannot write {path}: {_DISK_ERRORS[code]} ({os.strerror(code)}). Nothing was "
            "replaced: the previous version, if any, is intact. Free some space or choose a "
            "writable folder, then rerun the same command (it resumes)"
        )


def disk_error(path: str | os.PathLike[str], e: BaseException) -> UserError | None:
    """The :class:`UserError` for a write the file system refused (disk full, quota,
    read-only, permission), or None for other errors (those are bugs and keep their
    traceback). Names ``path`` (or the file the error names, if it is under ``path``)."""
    if isinstance(e, UserError):
        return None
    found = _disk_errno(e)
    if found is None:
        return None
    code, filename = found
    where = filename if filename and filename.startswith(str(path)) else str(path)
    return DiskWriteError(where, code)


@contextlib.contextmanager
def refused_writes(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside: a write the file system refuses becomes :func:`disk_error`'s UserError naming
    ``path``; every other error passes unchanged."""
    try:
        yield
    except Exception as e:
        err = disk_error(path, e)
        if err is None:
            raise
        raise err from e


class OutsideRunError(UserError):
    """A write below a run folder whose path, links followed, leads out of it."""


# Every run folder this process works in (absolute, ".." collapsed): the write helpers take
# bare paths, so RunDir (and the commands' run log) tell them the roots to check paths against.
_RUN_ROOTS: set[Path] = set()


def register_run_root(root: str | os.PathLike[str]) -> None:
    """Make :func:`confined` check every write below ``root`` (a :class:`RunDir` does it)."""
    _RUN_ROOTS.add(Path(os.path.abspath(root)))


def confined(path: str | os.PathLike[str]) -> Path:
    """``path``, after checking that a write there stays inside the run folder it lies under
    (one :func:`register_run_root` named in this process): a symbolic link on the way (``trials/``
    or ``final/`` pointing elsewhere, or the target itself) that leads out of the run is an
    :class:`OutsideRunError` naming the path. Paths under no run folder are not checked.
    Costs two ``resolve()`` calls; called before anything is created."""
    path = Path(path)
    absolute = path.absolute()  # ".." kept: "run/a/../../x" is checked against "run"
    root = next((p for p in absolute.parents if p in _RUN_ROOTS), None)
    if root is None:
        return path
    try:
        real_root, real = root.resolve(), absolute.resolve()
    except (OSError, RuntimeError) as e:  # a link loop
        raise OutsideRunError(f"refusing to write {path}: its path cannot be resolved "
                              f"({e})") from None
    if real != real_root and real_root not in real.parents:
        raise OutsideRunError(
            f"refusing to write {path}: it leads out of the run folder {root} (to {real}, "
            "through a symbolic link or '..'); replace the link by a real folder, or use "
            "another --run")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = confined(path)
    with refused_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        err = disk_error(path, e)
        if err is not None:
            raise err from e
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
    final = confined(final)
    with refused_writes(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        _restore_interrupted_swap(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            _swap_in(tmp, final)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, DiskWriteError):  # a file inside the temp folder: name the folder
            raise DiskWriteError(final, e.code) from e
        err = disk_error(final, e)
        if err is not None:
            raise err from e
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system or the file system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace the folder ``final`` by ``tmp`` so that a kill at any instant leaves one of
    the two complete under the name ``final``. Where an atomic exchange is impossible, the old
    folder is parked as ``.<name>.old-<pid>`` for a moment; :func:`_restore_interrupted_swap`
    puts it back if the process dies in that moment."""
    if _exchange(tmp, final):  # tmp now holds the old folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _restore_interrupted_swap(final: Path) -> None:
    """If a process died between parking the old ``final`` and renaming the new one in, the
    old one is the last complete version: give it its name back."""
    if final.exists():
        return
    for parked in sorted(final.parent.glob(f".{final.name}.old-*")):
        os.replace(parked, final)
        return


def remove_stale_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete what killed atomic writes left under ``root`` (``.<name>.<random>.tmp`` files and
    folders); returns them. Call only while no other process writes into ``root``."""
    removed = []
    for p in sorted(Path(root).rglob(".*.tmp"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(path: str | os.PathLike[str], state: dict[str, Any] | None = None,
                 record: str = "state.json") -> None:
    """Check a folder's files against the sha256 its ``record`` (a checkpoint's
    ``state.json``) holds (folders from before checksums have none: nothing to check). A
    same-size edit or bit rot is a :class:`UserError` naming the file, never loaded silently.
    Here, at the bottom, because both the model loader and the trainer's checkpoints use it."""
    folder = Path(path)
    if state is None:
        if not (folder / record).exists():
            return
        state = read_json(folder / record, "checkpoint state")
    sums = state.get("sha256") or {}
    if not isinstance(sums, dict):
        raise UserError(f"{folder / record}: 'sha256' is not a map of file names")
    for name, want in sums.items():
        # the names come from a file: plain names of regular files inside the folder only
        # (never /dev/zero, ../../elsewhere, a sub-path or a link out)
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise UserError(f"{folder / record} lists {name!r} in its checksums, not a file "
                            "name in the folder: refusing to read it")
        file = safe_join(folder, name)
        if file.exists() and not file.is_file():
            raise UserError(f"{file} is not a regular file: refusing to read it")
        if file.exists() and sha256_file(file) != want:
            raise UserError(f"{file} does not match the checksum in {folder / record}: it "
                            "was altered or damaged after it was written; delete the "
                            "checkpoint folder and rerun the stage that writes it")


def safe_join(root: str | os.PathLike[str], rel: str | os.PathLike[str]) -> Path:
    """Join ``rel`` under ``root``, refusing any path that escapes it (``..``, absolute, links)."""
    root_r = Path(root).resolve()
    target = (root_r / rel).resolve()
    if target != root_r and root_r not in target.parents:
        raise UserError(f"path {str(rel)!r} escapes the run directory {root_r}")
    return target


NAME_MAX = 255  # bytes of one path component on Linux file systems


def check_run_folder(raw: str) -> None:
    """Refuse a ``--run`` value that cannot be a run folder, before any work: empty (it would
    write into the current folder), a component longer than the file system allows, a file
    or a path under a file, a place where no folder can be made."""
    if not raw.strip():
        raise UserError("--run is empty: give a folder such as runs/demo (an empty name would "
                        "write into the current folder)")
    path = Path(raw)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"--run: the folder name {part[:40]}… is {len(part)} characters; "
                            f"file systems allow {NAME_MAX} bytes per name: choose a shorter one")
    if path.exists() and not path.is_dir():
        raise UserError(f"--run {raw} is a file, not a folder: give a folder (it is created "
                        "when missing)")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent != path and not parent.is_dir():
        raise UserError(f"--run {raw}: {parent} is a file, so no folder can be made under it")
    if str(path.resolve()).startswith(("/proc/", "/sys/", "/dev/")) or \
            str(path.resolve()) in ("/proc", "/sys", "/dev"):
        raise UserError(f"--run {raw} is inside a system pseudo-file system: give a folder "
                        "on a disk, such as runs/demo")


class RunDir:
    """A run directory (``runs/<name>/``) and the manifest that records it.

    The layout is the one in DESIGN.md; stages ask this class for paths instead of building
    them, so the layout lives in one place.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        register_run_root(root)  # writes below it stay inside it: see confined()

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

    def trial(self, number: int, study: str | None = None) -> Path:
        """A search trial's folder: ``trials/N``, or ``trials/STUDY-N`` for a run's second
        study (its numbers start at 0 too)."""
        return self.root / "trials" / (str(number) if study is None else f"{study}-{number}")

    def path(self, rel: str) -> Path:
        """Resolve a path recorded in the manifest, refusing ones that escape the run."""
        return safe_join(self.root, rel)

    # -- manifest -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(confined(self.root / ".manifest.lock"), "a+") as lock:
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

    def record_failure(self, command: str, error: BaseException | None) -> None:
        """Record how the last ``command`` ended: ``error`` (so that ``lmalloc status`` says
        the run failed, and why, instead of "running") or, with None, success (cleared)."""
        if error is None:
            if self.manifest().get("last_failure"):
                self.update_manifest(last_failure=None)
            return
        what = ("interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt)
                else f"{type(error).__name__}: {error}")
        self.update_manifest(last_failure={"command": command, "error": what,
                                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime())})

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


# The parts a ledger row's ``seconds`` may be split into (rows of training stages carry them;
# ``idle_seconds`` is a stage's wall time that none of its rows charged).
LEDGER_PARTS = ("train_seconds", "eval_seconds", "checkpoint_seconds", "startup_seconds",
                "idle_seconds")


def ledger_by_stage(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """FLOPs, seconds and the parts of the seconds (:data:`LEDGER_PARTS`, where rows carry
    them) per stage, in the order stages first charged the ledger."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        s = out.setdefault(str(r.get("stage")), {"flops": 0.0, "seconds": 0.0})
        s["flops"] += float(r.get("flops", 0.0))
        s["seconds"] += float(r.get("seconds", 0.0))
        for part in LEDGER_PARTS:
            if part in r:
                s[part] = s.get(part, 0.0) + float(r[part])
    return out


def ledger_parts(result: dict[str, Any]) -> dict[str, float]:
    """The ledger fields of a training result (``TrainResult.to_dict()``): ``seconds`` (all
    of this session's, start-up included) and its parts; a result saved before the parts
    existed charges its seconds as training."""
    ev = float(result.get("session_eval_seconds", 0.0))
    ck = float(result.get("session_checkpoint_seconds", 0.0))
    up = float(result.get("startup_seconds", 0.0))
    total = float(result.get("session_seconds", 0.0))
    return {"seconds": total + up, "train_seconds": max(0.0, total - ev - ck),
            "eval_seconds": ev, "checkpoint_seconds": ck, "startup_seconds": up}

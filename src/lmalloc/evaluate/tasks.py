"""Downstream tasks declared as data: a TOML file (or a JSONL file with a header line).

A task is examples + a prompt template + a kind that picks the metric. Users add their own
without code. A TOML task file::

    [task]
    name = "sst2"
    kind = "classification"          # or "generation", "multiple_choice"
    template = "Review: {text}\\nSentiment:"
    labels = ["negative", "positive"]            # classification only, in a fixed order
    verbalizers = [" negative", " positive"]     # optional; default: delimiter + label
    target_delimiter = " "           # optional: put between prompt and target/choice/label
    eval_split = "dev"               # optional; default "test" if present, else "dev"

    [data]
    format = "tsv"                   # "tsv" | "jsonl" | "trec" | "parallel"
    text = "sentence"                # tsv: column name (or 0-based index); jsonl: field name
    label = "label"                  # the label column/field (classification, multiple choice)
    label_map = { "0" = "negative", "1" = "positive" }   # optional: raw value -> label
    header = true                    # tsv: the first row names the columns (default true)
    encoding = "utf-8"               # "trec" defaults to latin-1
    [data.splits]                    # any of train/dev/test
    train = "sst2/train.tsv"
    dev = "sst2/dev.tsv"

Formats: ``tsv`` (columns ``text``, ``label``, ``target``; quotes are not special);
``jsonl`` (one object per line; fields ``text``, ``label``, ``target``, ``choices``, renamed
by the keys of the same names); ``trec`` (``LABEL:fine text`` lines; ``fine = true`` keeps
the fine label); ``parallel`` (a split is ``["src.txt", "tgt.txt"]``, aligned lines: source
is the text, target the reference). A multiple-choice label is the correct choice's text or its
0-based index.

Paths: relative paths resolve against ``data_root`` when it is given, else against the task
file's folder. Built-in tasks (``builtin_tasks()``) always resolve against ``data_root``,
default ``$LMALLOC_SHARED_DATA`` or ``<repo>/../shared/data``. Nothing is downloaded.

A JSONL task file holds its examples inline: the first line is ``{"task": {...}}`` (the
``[task]`` table), each other line an example with a ``"split"`` field, e.g.
``{"split": "test", "text": "2+2=", "choices": ["4", "5"], "label": "4"}``.

Every mistake (missing field, unknown kind, a label the task does not declare or one that never
occurs, an empty split) raises :class:`~lmalloc.errors.UserError` naming the file and field.
"""

from __future__ import annotations

import csv
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError

KINDS = ("classification", "generation", "multiple_choice")
SPLITS = ("train", "dev", "test")
FORMATS = ("tsv", "jsonl", "trec", "parallel")
BUILTIN_DIR = Path(__file__).parent / "builtin"
DATA_ENV = "LMALLOC_SHARED_DATA"


@dataclass(frozen=True)
class Example:
    """One example: the input before the template, and its answer."""

    text: str
    label: str | None = None  # classification: the label; multiple choice: the correct choice
    target: str | None = None  # generation: the reference output
    choices: tuple[str, ...] = ()  # multiple-choice options


@dataclass(frozen=True)
class Task:
    """A loaded task. ``verbalizers`` is filled from the labels when not given."""

    name: str
    kind: str
    template: str
    labels: tuple[str, ...] = ()
    verbalizers: tuple[str, ...] = ()
    splits: Mapping[str, Sequence[Example]] = field(default_factory=dict)
    target_delimiter: str = " "
    eval_split: str = ""  # "" = "test" when present, else "dev"
    source: str = ""  # the task file, for messages

    def __post_init__(self) -> None:
        if self.kind == "classification" and not self.verbalizers:
            object.__setattr__(self, "verbalizers",
                               tuple(self.target_delimiter + lab for lab in self.labels))

    def prompt(self, ex: Example) -> str:
        """The model's input for ``ex``: the template with ``{text}`` filled in."""
        return self.template.format(text=ex.text)

    def answer(self, ex: Example) -> str:
        """The text that follows the prompt for a correct answer (few-shot demonstrations):
        the label's verbalizer, or the delimiter + target / correct choice."""
        if self.kind == "classification":
            return self.verbalizers[self.labels.index(str(ex.label))]
        return self.target_delimiter + str(ex.target if self.kind == "generation" else ex.label)

    def eval_split_name(self) -> str:
        """The split scored by ``lmalloc eval --task``."""
        if self.eval_split:
            return self.eval_split
        return "test" if "test" in self.splits else "dev"


def default_data_root() -> Path:
    """``$LMALLOC_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"


def builtin_tasks() -> list[str]:
    """Names of the tasks shipped with lmalloc (on the data sets in ``shared/data``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_task(name_or_path: str | os.PathLike[str], data_root: Path | None = None, *,
              max_examples: int | None = None) -> Task:
    """Load a built-in task by name, or a task file (``.toml`` / ``.jsonl``).

    Args:
        name_or_path: a name from :func:`builtin_tasks` or a path.
        data_root: folder that relative data paths resolve against (see the module doc).
        max_examples: keep the first this many examples of each split (after validation).
    """
    text = str(name_or_path)
    path = Path(text)
    builtin = BUILTIN_DIR / f"{text}.toml"
    if path.suffix not in (".toml", ".jsonl") and builtin.is_file():
        path, root = builtin, Path(data_root) if data_root else default_data_root()
    elif path.suffix in (".toml", ".jsonl") or path.exists():
        if not path.is_file():
            raise UserError(f"task file not found: {path}")
        root = Path(data_root) if data_root else path.parent
    else:
        raise UserError(f"unknown task {text!r}: expected a built-in task "
                        f"({', '.join(builtin_tasks())}) or a path to a .toml/.jsonl task file")
    if max_examples is not None and max_examples < 1:
        raise UserError(f"invalid max_examples = {max_examples}: expected a positive integer")
    if path.suffix == ".jsonl":
        meta, splits = _read_jsonl_task(path)
    else:
        meta, splits = _read_toml_task(path, root)
    return _build(path, meta, splits, max_examples)


def _read_toml_task(path: Path, root: Path) -> tuple[dict[str, Any], dict[str, list[Example]]]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
    meta, data = doc.get("task"), doc.get("data")
    if not isinstance(meta, dict):
        raise UserError(f"{path}: missing [task] table (name, kind, template)")
    if not isinstance(data, dict):
        raise UserError(f"{path}: missing [data] table (format, splits)")
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise UserError(f"{path}: invalid data.format = {fmt!r}: expected one of {FORMATS}")
    files = data.get("splits")
    if not isinstance(files, dict) or not files:
        raise UserError(f"{path}: missing [data.splits] table (train/dev/test file paths)")
    splits: dict[str, list[Example]] = {}
    for split, spec in files.items():
        if split not in SPLITS:
            raise UserError(f"{path}: unknown split data.splits.{split}: expected {SPLITS}")
        where = f"{path}: data.splits.{split}"
        paths = [spec] if isinstance(spec, str) else spec
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise UserError(f"{where} must be a path (or [source, target] for parallel)")
        resolved = [p if p.is_absolute() else root / p for p in map(Path, paths)]
        for p in resolved:
            if not p.is_file():
                raise UserError(f"{where}: data file not found: {p}")
        splits[split] = _READERS[fmt](resolved, data, where)
    return {**meta, "label_map": data.get("label_map")}, splits


def _column_index(header: list[str] | None, key: Any, where: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    if header is not None and key in header:
        return header.index(key)
    raise UserError(f"{where}: column {key!r} not found (header: {header})")


def _read_tsv(paths: list[Path], data: dict[str, Any], where: str) -> list[Example]:
    (path,) = _one_file(paths, where)
    with open(path, encoding=data.get("encoding", "utf-8"), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if data.get("header", True) and rows else None
    cols = {k: _column_index(header, data.get(k, k), f"{where} ({path})")
            for k in ("text", "label", "target")
            if k == "text" or k in data or (header is not None and k in header)}
    width = max(cols.values()) + 1
    out = []
    for n, row in enumerate(rows, start=2 if header else 1):
        if len(row) < width:
            if not any(c.strip() for c in row):
                continue
            raise UserError(f"{where}: {path} line {n} has {len(row)} columns, expected "
                            f"{width}")
        label, target = cols.get("label"), cols.get("target")
        out.append(Example(row[cols["text"]].strip(),
                           label=None if label is None else row[label].strip(),
                           target=None if target is None else row[target].strip()))
    return out


def _read_jsonl(paths: list[Path], data: dict[str, Any], where: str) -> list[Example]:
    (path,) = _one_file(paths, where)
    rows = []
    for n, line in enumerate(path.read_text(encoding=data.get("encoding", "utf-8")).splitlines()):
        if line.strip():
            try:
                rows.append((n + 1, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: {path} line {n + 1} is not JSON ({e})") from None
    return [_example(obj, data, f"{where}: {path} line {n}") for n, obj in rows]


def _example(obj: Any, keys: Mapping[str, Any], where: str) -> Example:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    name = {k: keys.get(k, k) for k in ("text", "label", "target", "choices")}
    if name["text"] not in obj:
        raise UserError(f"{where}: missing field {name['text']!r}")
    choices = tuple(str(c) for c in obj.get(name["choices"], ()))
    label = obj.get(name["label"])
    if choices and isinstance(label, int) and not isinstance(label, bool):
        if not 0 <= label < len(choices):
            raise UserError(f"{where}: label index {label} outside the {len(choices)} choices")
        label = choices[label]
    target = obj.get(name["target"])
    return Example(str(obj[name["text"]]), label=None if label is None else str(label),
                   target=None if target is None else str(target), choices=choices)


def _read_trec(paths: list[Path], data: dict[str, Any], where: str) -> list[Example]:
    (path,) = _one_file(paths, where)
    out = []
    for n, line in enumerate(path.read_text(encoding=data.get("encoding", "latin-1"))
                             .splitlines(), start=1):
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        coarse, sep, fine = head.partition(":")
        if not sep or not text.strip():
            raise UserError(f"{where}: {path} line {n} is not 'LABEL:fine question'")
        out.append(Example(text.strip(), label=head if data.get("fine") else coarse))
    return out


def _read_parallel(paths: list[Path], data: dict[str, Any], where: str) -> list[Example]:
    if len(paths) != 2:
        raise UserError(f"{where}: format 'parallel' needs [source_file, target_file]")
    enc = data.get("encoding", "utf-8")
    src, tgt = (p.read_text(encoding=enc).splitlines() for p in paths)
    if len(src) != len(tgt):
        raise UserError(f"{where}: {paths[0]} has {len(src)} lines but {paths[1]} has "
                        f"{len(tgt)}: parallel files must align line by line")
    return [Example(s.strip(), target=t.strip()) for s, t in zip(src, tgt, strict=True)
            if s.strip() and t.strip()]


def _one_file(paths: list[Path], where: str) -> list[Path]:
    if len(paths) != 1:
        raise UserError(f"{where}: expected one file, got {len(paths)}")
    return paths


_READERS = {"tsv": _read_tsv, "jsonl": _read_jsonl, "trec": _read_trec,
            "parallel": _read_parallel}


def _read_jsonl_task(path: Path) -> tuple[dict[str, Any], dict[str, list[Example]]]:
    lines = [(n, s) for n, s in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if s.strip()]
    objs = []
    for n, s in lines:
        try:
            objs.append((n, json.loads(s)))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not JSON ({e})") from None
    if not objs or not isinstance(objs[0][1], dict) or "task" not in objs[0][1]:
        raise UserError(f"{path}: the first line must be the header {{\"task\": {{...}}}}")
    meta = objs[0][1]["task"]
    if not isinstance(meta, dict):
        raise UserError(f"{path}: the header's 'task' must be an object")
    splits: dict[str, list[Example]] = {}
    for n, obj in objs[1:]:
        split = obj.get("split") if isinstance(obj, dict) else None
        if split not in SPLITS:
            raise UserError(f"{path} line {n}: field 'split' = {split!r}: expected {SPLITS}")
        splits.setdefault(split, []).append(_example(obj, meta, f"{path} line {n}"))
    return meta, splits


def _build(path: Path, meta: dict[str, Any], splits: dict[str, list[Example]],
           max_examples: int | None) -> Task:
    for key in ("name", "kind", "template"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise UserError(f"{path}: missing or empty field task.{key}")
    kind, template = meta["kind"], meta["template"]
    if kind not in KINDS:
        raise UserError(f"{path}: invalid task.kind = {kind!r}: expected one of {KINDS}")
    try:
        ok = template.format(text="\0") != template
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{path}: task.template = {template!r} must contain {{text}} and no "
                        "other {...} field (write literal braces as {{ and }})")
    labels = tuple(str(x) for x in meta.get("labels", ()))
    verbalizers = tuple(str(x) for x in meta.get("verbalizers", ()))
    if kind == "classification":
        if len(labels) < 2:
            raise UserError(f"{path}: task.labels must list at least 2 labels for a "
                            "classification task")
        if verbalizers and len(verbalizers) != len(labels):
            raise UserError(f"{path}: task.verbalizers has {len(verbalizers)} entries, "
                            f"task.labels has {len(labels)}: one verbalizer per label")
    splits = _checked_splits(path, kind, labels, meta.get("label_map"), splits)
    eval_split = str(meta.get("eval_split", ""))
    if eval_split and eval_split not in splits:
        raise UserError(f"{path}: task.eval_split = {eval_split!r} is not among the splits "
                        f"{sorted(splits)}")
    if not eval_split and not {"test", "dev"} & set(splits):
        raise UserError(f"{path}: no 'test' or 'dev' split to evaluate on")
    if max_examples is not None:
        splits = {k: v[:max_examples] for k, v in splits.items()}
    return Task(meta["name"], kind, template, labels, verbalizers, splits,
                target_delimiter=str(meta.get("target_delimiter", " ")), eval_split=eval_split,
                source=str(path))


def _checked_splits(path: Path, kind: str, labels: tuple[str, ...], label_map: Any,
                    splits: dict[str, list[Example]]) -> dict[str, list[Example]]:
    """Map raw labels, and check that every split is non-empty and complete for ``kind``."""
    if label_map is not None and not isinstance(label_map, dict):
        raise UserError(f"{path}: data.label_map must be a table of raw value = label")
    out: dict[str, list[Example]] = {}
    seen: set[str] = set()
    for split, exs in splits.items():
        if not exs:
            raise UserError(f"{path}: split {split!r} is empty")
        prefix = f"{path}: split {split!r} example"  # once per split: loaders check every row
        fixed = []
        for i, ex in enumerate(exs):
            if kind == "classification":
                label = ex.label if label_map is None else label_map.get(ex.label, ex.label)
                if label is None:
                    raise UserError(f"{prefix} {i} has no label")
                if str(label) not in labels:
                    raise UserError(f"{prefix} {i} has label {label!r}, absent from task.labels "
                                    f"{list(labels)} (check data.label_map)")
                ex = Example(ex.text, label=str(label))
                seen.add(str(label))
            elif kind == "generation" and ex.target is None:
                raise UserError(f"{prefix} {i} has no target")
            elif kind == "multiple_choice" and (len(ex.choices) < 2 or ex.label not in ex.choices):
                raise UserError(f"{prefix} {i} needs 2+ choices and a label that is one of them")
            fixed.append(ex)
        out[split] = fixed
    missing = [lab for lab in labels if lab not in seen]
    if kind == "classification" and missing:
        raise UserError(f"{path}: task.labels {missing} never occur in the data")
    return out

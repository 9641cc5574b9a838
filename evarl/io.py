"""Records and templates: the one place evarl reads and writes its plain files.

Records are JSON objects, one per line (JSONL), or a JSON array of objects (AlpacaEval's `model_outputs.json`).
Readers name the file and the 1-based line of a damaged record (``p.jsonl:3: not valid JSON ...``) and raise
`DataError`, which the CLI prints as one line with exit status 2.

Writers are atomic (a temp file in the same folder, renamed over the target, so a killed process never leaves
half a file) and, in a multi-process run, write on rank 0 only: the other ranks read the file after the stage's
barrier (`evarl.dist`). `replace_dir` does the same for whole directories.

Templates (meta-prompts, judge prompts) are text files under `evarl/prompts/<folder>/`, or any file a user
points to; `load_template` is the one loader and checks the `{slot}` placeholders a caller needs.

Bottom layer: imports only the standard library, `evarl.types` and (lazily) `evarl.dist`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


class DataError(ValueError):
    """A bad input file or row; the message names the file, line (or row) and field."""


class TemplateError(DataError):
    """A template that is missing or lacks a `{slot}` its caller fills."""


# ---------------------------------------------------------------- reading records


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file does not exist" if not p.exists() else f"{p}: not a file")
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file, in order."""
    return [row for _, row in iter_jsonl(path)]


def read_json(path: str | Path) -> Any:
    """One JSON document."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None


def iter_json_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, object) from JSONL or from a JSON array of objects (entries numbered from 1)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file does not exist")
    with open(p, encoding="utf-8") as f:
        head = f.read(4096).lstrip()[:1]
    if head != "[":
        yield from iter_jsonl(p)
        return
    data = read_json(p)
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError(f"{p}:entry {i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def read_records(path: str | Path, cls: Any) -> list[Any]:
    """A stage artifact (JSONL) back into dataclasses (`cls.from_dict` or `cls(**row)`), naming a damaged line."""
    out = []
    for i, row in iter_jsonl(path):
        try:
            out.append(cls.from_dict(row) if hasattr(cls, "from_dict") else cls(**row))
        except (TypeError, KeyError) as e:
            raise DataError(f"{path}:{i}: does not match {cls.__name__} ({e})") from None
    return out


# ---------------------------------------------------------------- writing


def _not_writer() -> bool:
    """In a multi-process run only rank 0 writes files; the others see them after the stage's barrier."""
    from evarl.dist import world

    return not world().is_main


def _record(r: Any) -> Any:
    return r.to_dict() if hasattr(r, "to_dict") else r


def _atomic_write(path: Path, chunks: Iterable[str], fsync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """Atomic text write. Rank 0 only."""
    p = Path(path)
    if not _not_writer():
        _atomic_write(p, [text])
    return p


def write_jsonl(path: str | Path, rows: Iterable[Any], sort_keys: bool = False) -> Path:
    """Atomic JSONL write, one record (a dict, or an object with `to_dict`) per line, fsynced. Rank 0 only.
    `sort_keys` makes the bytes independent of key order (evaluation files a rerun must reproduce exactly)."""
    p = Path(path)
    if not _not_writer():
        lines = (json.dumps(_record(r), ensure_ascii=False, sort_keys=sort_keys) + "\n" for r in rows)
        _atomic_write(p, lines, fsync=True)
    return p


def write_json(path: str | Path, obj: Any, sort_keys: bool = False) -> Path:
    """Atomic JSON write (2-space indent, trailing newline; unknown types as `str`). Rank 0 only."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys, default=str) + "\n"
    return write_text(path, text)


@contextmanager
def replace_dir(target: str | Path) -> Iterator[Path]:
    """A fresh directory `.<name>.XXXX` beside `target` to write into; when the block ends without error it is
    renamed onto `target` (an old `target` is removed first), so a reader never sees half a directory. On error
    it is deleted and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- templates


@cache
def _read_template(path: str, mtime_ns: int) -> str:
    return Path(path).read_text(encoding="utf-8").rstrip()


def shipped_templates(folder: str) -> list[str]:
    """Names of the templates shipped in `evarl/prompts/<folder>/`."""
    return sorted(p.stem for p in (PROMPTS_DIR / folder).glob("*.txt"))


def load_template(name_or_path: str | Path, folder: str, required: Sequence[str] = ()) -> str:
    """A template's text (trailing whitespace removed): a file path, or the name of a template shipped in
    `evarl/prompts/<folder>/` (`load_template("pairwise", "eval")`). Every slot in `required` (`"response"`
    for `{response}`) must appear in it; a missing file or slot raises `TemplateError` naming the file."""
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        p = PROMPTS_DIR / folder / f"{name_or_path}.txt"
    if not p.is_file():
        raise TemplateError(
            f"{name_or_path}: no such template file, nor a {folder} template shipped in evarl/prompts/{folder}/ "
            f"(shipped: {', '.join(shipped_templates(folder)) or 'none'})"
        )
    text = _read_template(str(p.resolve()), p.stat().st_mtime_ns)
    missing = [s for s in required if "{" + s + "}" not in text]
    if missing:
        raise TemplateError(f"{p}: template lacks the slot(s) {', '.join('{' + m + '}' for m in missing)}")
    return text


def fill_template(template: str, **fields: str) -> str:
    """Substitute `{name}` slots in one pass: braces inside the inserted text are left alone, and inserted text
    is never scanned for slots again. Unknown slots stay as written."""
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


__all__ = [
    "PROMPTS_DIR",
    "DataError",
    "TemplateError",
    "fill_template",
    "iter_json_rows",
    "iter_jsonl",
    "load_template",
    "read_json",
    "read_jsonl",
    "read_records",
    "replace_dir",
    "shipped_templates",
    "write_json",
    "write_jsonl",
    "write_text",
]

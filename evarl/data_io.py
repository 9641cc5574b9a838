"""Reading and writing the plain files every stage uses: JSONL (atomic writes, resumable appends) and the
prompt formats users bring (TRL prompt-only `{"prompt": [messages]}`, `{"prompt": "text"}`, IFEval
`{"key", "prompt", "instruction_id_list", "kwargs"}`, Parquet). Bad rows stop with `file:line: field: problem`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evarl.types import Constraint, Prompt


class DataError(ValueError):
    """A bad input row; the message names the file, line and field."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file does not exist")
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(row, dict):
                raise DataError(f"{p}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]


def _not_writer() -> bool:
    """In a multi-process run only rank 0 writes files; the others see them after the stage's barrier."""
    from evarl.dist import world

    return not world().is_main


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Atomic: written to a temp file in the same folder, then renamed over `path`. Rank 0 only."""
    if _not_writer():
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in rows:
                d = r.to_dict() if hasattr(r, "to_dict") else r
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic, rank 0 only (as write_jsonl)."""
    if _not_writer():
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from e


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field 'prompt': empty prompt")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        for j, m in enumerate(value):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"{where}: field 'prompt[{j}]': expected {{'role', 'content'}}")
            if m["role"] not in ("system", "user", "assistant"):
                raise DataError(f"{where}: field 'prompt[{j}].role': unknown role {m['role']!r}")
        if not any(m["role"] == "user" and str(m["content"]).strip() for m in value):
            raise DataError(f"{where}: field 'prompt': no non-empty user turn")
        return [{"role": m["role"], "content": str(m["content"])} for m in value]
    raise DataError(f"{where}: field 'prompt': expected a string or a list of messages")


def prompt_from_row(row: dict[str, Any], where: str, index: int) -> Prompt:
    """One prompt from any supported row format. `where` is 'file:line' for error messages."""
    if "instruction_id_list" in row:  # IFEval format
        ids = row.get("instruction_id_list") or []
        kwargs = row.get("kwargs") or [{} for _ in ids]
        if len(kwargs) != len(ids):
            raise DataError(f"{where}: field 'kwargs': {len(kwargs)} entries for {len(ids)} instructions")
        if ids:
            from evarl.tasks.checkers import registry

            unknown = [i for i in ids if i not in registry()]
            if unknown:
                raise DataError(
                    f"{where}: field 'instruction_id_list': unknown instruction id(s) {unknown} "
                    "(not IFEval or IFBench checkers)"
                )
        constraints = [
            Constraint(i, {k: v for k, v in (kw or {}).items() if v is not None})
            for i, kw in zip(ids, kwargs)
        ]
        msgs = _messages(row.get("prompt"), where)
        return Prompt(
            id=str(row.get("key", index)),
            messages=msgs,
            task=row.get("task", msgs[-1]["content"]),
            constraints=constraints,
            category=row.get("category", ""),
        )
    if "messages" in row and "prompt" not in row:
        msgs = (
            [m for m in row["messages"] if m.get("role") != "assistant"]
            if isinstance(row["messages"], list)
            else row["messages"]
        )
        msgs = _messages(msgs, where)
    elif "prompt" in row:
        msgs = _messages(row["prompt"], where)
    elif "instruction" in row:  # AlpacaEval
        msgs = _messages(row["instruction"], where)
    else:
        raise DataError(f"{where}: missing field 'prompt'")
    pid = row.get("id", row.get("prompt_id", row.get("key", index)))
    constraints = [Constraint(**c) if isinstance(c, dict) else c for c in row.get("constraints", [])]
    return Prompt(
        id=str(pid),
        messages=msgs,
        task=row.get("task", ""),
        constraints=constraints,
        category=row.get("category", ""),
    )


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from JSONL (any supported row format) or Parquet; ids must be unique."""
    p = Path(path)
    rows: list[tuple[str, dict[str, Any]]]
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from e
        if not p.exists():
            raise DataError(f"{p}: file does not exist")
        rows = [(f"{p}:row {i + 1}", r) for i, r in enumerate(pq.read_table(p).to_pylist())]
    else:
        rows = [(f"{p}:{i}", r) for i, r in iter_jsonl(p)]
    out: list[Prompt] = []
    seen: dict[str, str] = {}
    for k, (where, row) in enumerate(rows):
        pr = prompt_from_row(row, where, k)
        if pr.id in seen:
            raise DataError(f"{where}: field 'id': duplicate id {pr.id!r} (first at {seen[pr.id]})")
        seen[pr.id] = where
        out.append(pr)
    if not out:
        raise DataError(f"{p}: no prompts")
    return out


def read_ifeval_prompts(path: str | Path) -> list[Prompt]:
    return read_prompts(path)


def read_records(path: str | Path, cls: Any) -> list[Any]:
    """Stage artifacts back into dataclasses, naming the line of a damaged row."""
    out = []
    for i, row in iter_jsonl(path):
        try:
            out.append(cls.from_dict(row) if hasattr(cls, "from_dict") else cls(**row))
        except TypeError as e:
            raise DataError(f"{path}:{i}: does not match {cls.__name__} ({e})") from e
    return out

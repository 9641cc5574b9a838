"""Preference data for reward-model training and evaluation: TRL-format JSONL files.

Accepted rows (one JSON object a line):
- explicit prompt, plain: {"prompt": str, "chosen": str, "rejected": str}
- explicit prompt, conversational: {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
- implicit prompt (TRL): {"chosen": [messages...], "rejected": [messages...]} sharing all turns but the last
- optional "subset" (RewardBench) or "category" label, used for per-category accuracy

Every problem is reported with file and line ("prefs.jsonl:17: missing field 'chosen'").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evarl.io import DataError, iter_jsonl, write_jsonl


class PreferenceDataError(DataError):
    """A malformed preference file; the message names the file and line."""


@dataclass
class PreferenceRow:
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    subset: str = ""
    line: int = 0


def _messages(v: Any, where: str, field: str) -> list[dict[str, str]]:
    if not isinstance(v, list) or not v:
        raise PreferenceDataError(
            f"{where}: field {field!r} must be a string or a non-empty list of messages"
        )
    for k, m in enumerate(v):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PreferenceDataError(f"{where}: {field}[{k}] must be a message with 'role' and 'content'")
        if not isinstance(m["content"], str):
            raise PreferenceDataError(f"{where}: {field}[{k}].content must be a string")
    return [{"role": str(m["role"]), "content": m["content"]} for m in v]


def _response(v: Any, where: str, field: str) -> str:
    if isinstance(v, str):
        return v
    msgs = _messages(v, where, field)
    if msgs[-1]["role"] != "assistant":
        raise PreferenceDataError(f"{where}: the last message of {field!r} must have role 'assistant'")
    return msgs[-1]["content"]


def parse_row(d: Any, where: str) -> PreferenceRow:
    if not isinstance(d, dict):
        raise PreferenceDataError(f"{where}: expected a JSON object, got {type(d).__name__}")
    for f in ("chosen", "rejected"):
        if f not in d:
            raise PreferenceDataError(f"{where}: missing field {f!r}")
    subset = str(d.get("subset") or d.get("category") or "")
    if "prompt" in d:
        p = d["prompt"]
        if isinstance(p, str):
            prompt = [{"role": "user", "content": p}]
        else:
            prompt = _messages(p, where, "prompt")
        return PreferenceRow(prompt, _response(d["chosen"], where, "chosen"),
                             _response(d["rejected"], where, "rejected"), subset)  # fmt: skip
    # implicit prompt: conversational chosen/rejected sharing every turn but the last
    c = _messages(d["chosen"], where, "chosen")
    r = _messages(d["rejected"], where, "rejected")
    if len(c) < 2 or c[:-1] != r[:-1]:
        raise PreferenceDataError(
            f"{where}: missing field 'prompt' (and 'chosen'/'rejected' do not share a prompt prefix)"
        )
    return PreferenceRow(c[:-1], _response(c, where, "chosen"), _response(r, where, "rejected"), subset)


def load_preferences(path: str | Path) -> list[PreferenceRow]:
    """Rows of a preference JSONL file; blank lines are skipped; errors name file:line."""
    p = Path(path)
    if not p.exists():
        raise PreferenceDataError(f"{p}: preference file does not exist")
    rows: list[PreferenceRow] = []
    try:
        for lineno, d in iter_jsonl(p):
            row = parse_row(d, f"{p.name}:{lineno}")
            row.line = lineno
            rows.append(row)
    except PreferenceDataError:
        raise
    except DataError as e:  # the record reader's `file:line: not valid JSON`, as this file's error
        raise PreferenceDataError(str(e)) from None
    if not rows:
        raise PreferenceDataError(f"{p}: no preference rows")
    return rows


def write_preferences(path: str | Path, rows: list[PreferenceRow], conversational: bool = True) -> None:
    """Write rows in TRL's explicit-prompt format (conversational by default)."""
    out: list[dict[str, Any]] = []
    for r in rows:
        if conversational:
            d: dict[str, Any] = {
                "prompt": r.prompt,
                "chosen": [{"role": "assistant", "content": r.chosen}],
                "rejected": [{"role": "assistant", "content": r.rejected}],
            }
        else:
            d = {"prompt": r.prompt[-1]["content"], "chosen": r.chosen, "rejected": r.rejected}
        if r.subset:
            d["subset"] = r.subset
        out.append(d)
    write_jsonl(path, out)

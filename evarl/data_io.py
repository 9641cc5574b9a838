"""Prompt rows into `Prompt`s: the row formats users bring, whatever file or dataset they come from.

Row formats (one row = one prompt; `evarl.datasets_in` reads rows from JSONL, JSON, Parquet, CSV, Arrow, folders,
`save_to_disk` folders and cached hub datasets, and renames mapped columns first):

- TRL prompt-only: `{"prompt": "text"}` or `{"prompt": [{"role", "content"}, ...]}`;
- TRL conversational: `{"messages": [...]}`: the turns up to the last user turn are the prompt (a trailing
  assistant reply, the dataset's answer, is dropped);
- IFEval / IFBench: `{"key", "prompt", "instruction_id_list", "kwargs"}` (constraints for the verifier);
- AlpacaEval: `{"instruction": ...}`; evarl `Prompt` records (`id`, `messages`, `constraints`, ...).

Bad rows stop with `where: field 'name': problem`, `where` being `file:line` or `source:row N`. The record
readers and writers live in `evarl.io`; `DataError` is defined there and re-exported here.
"""

from __future__ import annotations

from typing import Any

from evarl.io import DataError
from evarl.registry import PROMPT_ROW_CHECKS
from evarl.types import Constraint, Prompt

ROLES = ("system", "user", "assistant")


def _messages(value: Any, where: str, field: str = "prompt") -> list[dict[str, str]]:
    """Chat messages from a text or a list of `{"role", "content"}` turns; `field` names the row's field."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field '{field}': empty prompt")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        for j, m in enumerate(value):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"{where}: field '{field}[{j}]': expected {{'role', 'content'}}")
            if m["role"] not in ROLES:
                raise DataError(f"{where}: field '{field}[{j}].role': unknown role {m['role']!r}")
            if not isinstance(m["content"], str):
                raise DataError(
                    f"{where}: field '{field}[{j}].content': expected a string, got {type(m['content']).__name__}"
                )
        if not any(m["role"] == "user" and m["content"].strip() for m in value):
            raise DataError(f"{where}: field '{field}': no non-empty user turn")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    got = "an empty list" if isinstance(value, list) else type(value).__name__
    raise DataError(f"{where}: field '{field}': expected a string or a list of messages, got {got}")


def _up_to_last_user(value: Any, where: str) -> Any:
    """A conversation's prompt: its turns up to and including the last user turn."""
    if not isinstance(value, list):
        return value  # _messages names the type problem
    last = max(
        (j for j, m in enumerate(value) if isinstance(m, dict) and m.get("role") == "user"), default=-1
    )
    if last < 0:
        raise DataError(f"{where}: field 'messages': no user turn")
    return value[: last + 1]


def _text_field(row: dict[str, Any], name: str, where: str, default: str = "") -> str:
    value = row.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}': expected a string, got {type(value).__name__}")
    return value


def _row_id(row: dict[str, Any], where: str, index: int, names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataError(
                f"{where}: field '{name}': expected a string or an integer, got {type(value).__name__}"
            )
        return str(value)
    return str(index)


def prompt_from_row(row: dict[str, Any], where: str, index: int) -> Prompt:
    """One prompt from any supported row format. `where` is 'file:line' for error messages."""
    for name in PROMPT_ROW_CHECKS.names():  # e.g. checker ids and kwargs (registered by evarl.tasks.validate)
        PROMPT_ROW_CHECKS.get(name)(row, where)
    if "instruction_id_list" in row:  # IFEval format
        ids = row.get("instruction_id_list") or []
        kwargs = row.get("kwargs") or [{} for _ in ids]
        if len(kwargs) != len(ids):
            raise DataError(f"{where}: field 'kwargs': {len(kwargs)} entries for {len(ids)} instructions")
        constraints = [
            Constraint(i, {k: v for k, v in (kw or {}).items() if v is not None})
            for i, kw in zip(ids, kwargs)
        ]
        msgs = _messages(row.get("prompt"), where)
        return Prompt(
            id=_row_id(row, where, index, ("key", "id")),
            messages=msgs,
            task=_text_field(row, "task", where, msgs[-1]["content"]),
            constraints=constraints,
            category=_text_field(row, "category", where),
        )
    if row.get("messages") is not None and row.get("prompt") is None:  # TRL conversational
        msgs = _messages(_up_to_last_user(row["messages"], where), where, "messages")
    elif "prompt" in row:
        msgs = _messages(row["prompt"], where)
    elif "instruction" in row:  # AlpacaEval
        msgs = _messages(row["instruction"], where, "instruction")
    else:
        raise DataError(f"{where}: missing field 'prompt' (or 'messages', 'instruction')")
    constraints = [Constraint(**c) if isinstance(c, dict) else c for c in row.get("constraints") or []]
    return Prompt(
        id=_row_id(row, where, index, ("id", "prompt_id", "key")),
        messages=msgs,
        task=_text_field(row, "task", where),
        constraints=constraints,
        category=_text_field(row, "category", where),
    )


__all__ = ["ROLES", "DataError", "prompt_from_row"]

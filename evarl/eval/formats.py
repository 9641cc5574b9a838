"""Benchmark file formats: IFEval, AlpacaEval, MT-Bench, Arena-Hard and evarl's own prompts.

Formats (one JSON object per line unless noted):

- IFEval (google/IFEval `input_data.jsonl`): `key`, `prompt`, `instruction_id_list`, `kwargs` (a list of dicts,
  one per instruction); optional `category` and `task` (evarl's shipped held-out set `evarl/data/heldout.jsonl`).
- AlpacaEval (`model_outputs.json` is a JSON *array*; JSONL is accepted too): `instruction`, `output`,
  `generator`, optional `dataset`. An eval set without outputs needs only `instruction`.
- MT-Bench (FastChat `question.jsonl`): `question_id`, `category`, `turns` (list of user turns, two in MT-Bench),
  optional `reference` (reference answers, one per turn, for math / reasoning / coding).
- Arena-Hard: v0.1 `question.jsonl` rows `question_id`, `category`, `turns: [{"content": ...}]`; v2 rows
  `uid`, `category`, `prompt`. Both are read.
- default: evarl `Prompt` dicts (a run's `prompts.jsonl`), TRL prompt-only rows `{"prompt": [messages]}` or
  `{"prompt": "text"}`; any other data source `datasets` reads (Parquet, CSV, Arrow, a folder, a `save_to_disk`
  folder, a cached hub dataset id) goes through `evarl.datasets_in` (docs/data.md).

Every error names the file and the 1-based line: ``mtbench.jsonl:3: missing field 'turns'``. The record readers
and writers underneath are `evarl.io`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evarl.io import DataError, iter_json_rows, iter_jsonl
from evarl.tasks.validate import check_constraint_records, check_constraints
from evarl.types import Constraint, Prompt

FORMATS = ("ifeval", "alpaca", "mtbench", "arena", "default")


class EvalFileError(DataError):
    """A malformed evaluation file; the message starts with `file:line:` (a `DataError`, so the CLI prints it
    as one line and exits with status 2)."""


@dataclass
class IFEvalItem:
    key: str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    category: str = ""  # evarl's shipped held-out set adds these two
    task: str = ""


@dataclass
class AlpacaItem:
    instruction: str
    output: str | None = None
    generator: str | None = None
    dataset: str | None = None


@dataclass
class MTBenchQuestion:
    question_id: str
    category: str
    turns: list[str]
    reference: list[str] | None = None


@dataclass
class ArenaQuestion:
    question_id: str
    category: str
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


def _require(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise EvalFileError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise EvalFileError(f"{where}: field '{key}' must be {names}, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- format readers


def read_ifeval(path: str | Path) -> list[IFEvalItem]:
    name = Path(path).name
    items = []
    for line, obj in iter_jsonl(path):
        where = f"{name}:{line}"
        ids = _require(obj, "instruction_id_list", list, where)
        check_constraints(ids, obj.get("kwargs"), where, EvalFileError)  # ids, kwargs vs. checkers
        kwargs = obj.get("kwargs")
        if kwargs is None:
            kwargs = [{} for _ in ids]
        if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
            raise EvalFileError(f"{where}: field 'kwargs' must be a list of objects")
        if len(kwargs) != len(ids):
            raise EvalFileError(
                f"{where}: 'kwargs' has {len(kwargs)} entries but 'instruction_id_list' has {len(ids)}"
            )
        items.append(
            IFEvalItem(
                key=str(_require(obj, "key", (int, str), where)),
                prompt=_require(obj, "prompt", str, where),
                instruction_id_list=[str(i) for i in ids],
                kwargs=kwargs,
                category=str(obj.get("category") or ""),
                task=str(obj.get("task") or ""),
            )
        )
    return items


def read_alpaca(path: str | Path, require_output: bool = False) -> list[AlpacaItem]:
    """AlpacaEval rows; with `require_output` every row must carry `output` (a model-outputs file)."""
    name = Path(path).name
    items = []
    for line, obj in iter_json_rows(path):
        where = f"{name}:{line}"
        out = obj.get("output")
        if require_output:
            out = _require(obj, "output", str, where)
        elif out is not None and not isinstance(out, str):
            raise EvalFileError(f"{where}: field 'output' must be str, got {type(out).__name__}")
        items.append(
            AlpacaItem(
                instruction=_require(obj, "instruction", str, where),
                output=out,
                generator=obj.get("generator"),
                dataset=obj.get("dataset"),
            )
        )
    return items


def read_mtbench(path: str | Path) -> list[MTBenchQuestion]:
    name = Path(path).name
    items = []
    for line, obj in iter_jsonl(path):
        where = f"{name}:{line}"
        turns = _require(obj, "turns", list, where)
        if not turns or not all(isinstance(t, str) for t in turns):
            raise EvalFileError(f"{where}: field 'turns' must be a non-empty list of strings")
        ref = obj.get("reference")
        if ref is not None and (not isinstance(ref, list) or not all(isinstance(r, str) for r in ref)):
            raise EvalFileError(f"{where}: field 'reference' must be a list of strings")
        items.append(
            MTBenchQuestion(
                question_id=str(_require(obj, "question_id", (int, str), where)),
                category=str(obj.get("category", "")),
                turns=turns,
                reference=ref or None,
            )
        )
    return items


def read_arena(path: str | Path) -> list[ArenaQuestion]:
    name = Path(path).name
    items = []
    for line, obj in iter_jsonl(path):
        where = f"{name}:{line}"
        qid = obj.get("question_id", obj.get("uid"))
        if qid is None:
            raise EvalFileError(f"{where}: missing field 'question_id' (or 'uid')")
        if "turns" in obj:
            turns = obj["turns"]
            if not isinstance(turns, list) or not turns:
                raise EvalFileError(f"{where}: field 'turns' must be a non-empty list")
            first = turns[0]
            text = first.get("content") if isinstance(first, dict) else first
            if not isinstance(text, str):
                raise EvalFileError(f"{where}: field 'turns[0]' must be a string or {{'content': str}}")
        elif "prompt" in obj:
            text = _require(obj, "prompt", str, where)
        else:
            raise EvalFileError(f"{where}: missing field 'turns' (or 'prompt')")
        meta = {k: obj[k] for k in ("cluster", "subcategory") if k in obj}
        items.append(ArenaQuestion(str(qid), str(obj.get("category", "")), text, meta))
    return items


def read_default(path: str | Path) -> list[Prompt]:
    """evarl Prompt dicts, or TRL prompt-only rows (`prompt`: messages or text; optional `id`), from JSONL.
    Other sources (Parquet, CSV, a dataset folder, a cached hub dataset) are read by `evarl.datasets_in`."""
    if Path(path).suffix != ".jsonl":
        from evarl.datasets_in import read_prompts

        return read_prompts(path)
    name = Path(path).name
    prompts = []
    for line, obj in iter_jsonl(path):
        where = f"{name}:{line}"
        if "messages" in obj and "id" in obj:
            msgs = _require(obj, "messages", list, where)
            _check_messages(msgs, where, "messages")
            check_constraint_records(
                obj.get("constraints", []), where, EvalFileError
            )  # before any generation
            try:
                prompts.append(Prompt.from_dict(obj))
            except (TypeError, ValueError) as e:
                raise EvalFileError(f"{where}: not a Prompt record ({e})") from None
            continue
        if "prompt" not in obj:
            raise EvalFileError(f"{where}: missing field 'prompt' (or a Prompt record with 'id', 'messages')")
        p = obj["prompt"]
        if isinstance(p, str):
            msgs = [{"role": "user", "content": p}]
        elif isinstance(p, list):
            _check_messages(p, where, "prompt")
            msgs = p
        else:
            raise EvalFileError(f"{where}: field 'prompt' must be a string or a list of messages")
        prompts.append(Prompt(id=str(obj.get("id", f"{Path(path).stem}-{line}")), messages=msgs))
    return prompts


def _check_messages(msgs: Any, where: str, key: str) -> None:
    ok = isinstance(msgs, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in msgs
    )
    if not ok or not msgs:
        raise EvalFileError(
            f"{where}: field '{key}' must be a non-empty list of {{'role', 'content'}} messages"
        )


def load_prompts(path: str | Path, fmt: str) -> list[Prompt]:
    """Any supported eval file as evarl Prompts (first user turn in `messages`; format details in `meta`).

    IFEval instructions become `Prompt.constraints`, so the verifier reward and the IFEval metrics read them;
    MT-Bench keeps all turns in `meta["turns"]`; AlpacaEval keeps a given `output` in `meta["output"]`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown eval format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "ifeval":
        return [
            Prompt(
                id=it.key,
                messages=[{"role": "user", "content": it.prompt}],
                task=it.task or it.prompt,
                category=it.category,
                constraints=[Constraint(i, dict(k)) for i, k in zip(it.instruction_id_list, it.kwargs)],
                meta={"key": it.key},
            )
            for it in read_ifeval(path)
        ]
    if fmt == "alpaca":
        return [
            Prompt(
                id=f"alpaca-{i}",
                messages=[{"role": "user", "content": it.instruction}],
                task=it.instruction,
                category=it.dataset or "",
                meta={k: v for k, v in (("output", it.output), ("generator", it.generator)) if v is not None},
            )
            for i, it in enumerate(read_alpaca(path))
        ]
    if fmt == "mtbench":
        return [
            Prompt(
                id=f"mtbench-{q.question_id}",
                messages=[{"role": "user", "content": q.turns[0]}],
                task=q.turns[0],
                category=q.category,
                meta={"turns": q.turns, "reference": q.reference, "question_id": q.question_id},
            )
            for q in read_mtbench(path)
        ]
    if fmt == "arena":
        return [
            Prompt(
                id=f"arena-{q.question_id}",
                messages=[{"role": "user", "content": q.prompt}],
                task=q.prompt,
                category=q.category,
                meta={"question_id": q.question_id, **q.meta},
            )
            for q in read_arena(path)
        ]
    return read_default(path)


def outputs_by_instruction(items: list[AlpacaItem], source: str = "outputs") -> dict[str, AlpacaItem]:
    """Index model outputs by instruction text (AlpacaEval's primary key); duplicates are an error."""
    out: dict[str, AlpacaItem] = {}
    for i, it in enumerate(items, start=1):
        if it.instruction in out:
            raise EvalFileError(f"{source}:{i}: duplicate instruction {it.instruction[:60]!r}")
        out[it.instruction] = it
    return out


def read_model_answers(path: str | Path) -> dict[str, str]:
    """Arena-Hard / FastChat model answers (`question_id`, `choices[0].turns[0]`), first turn by question id.

    A turn is a string (FastChat) or `{"content": str}` (Arena-Hard). Duplicate question ids are an error.
    """
    name = Path(path).name
    out: dict[str, str] = {}
    for line, obj in iter_jsonl(path):
        where = f"{name}:{line}"
        qid = obj.get("question_id", obj.get("uid"))
        if qid is None:
            raise EvalFileError(f"{where}: missing field 'question_id' (or 'uid')")
        choices = _require(obj, "choices", list, where)
        turns = choices[0].get("turns") if choices and isinstance(choices[0], dict) else None
        if not isinstance(turns, list) or not turns:
            raise EvalFileError(f"{where}: field 'choices[0].turns' must be a non-empty list")
        first = turns[0].get("content") if isinstance(turns[0], dict) else turns[0]
        if not isinstance(first, str):
            raise EvalFileError(
                f"{where}: field 'choices[0].turns[0]' must be a string or {{'content': str}}"
            )
        if str(qid) in out:
            raise EvalFileError(f"{where}: duplicate question_id {qid!r}")
        out[str(qid)] = first
    return out


def is_model_answers_file(path: str | Path) -> bool:
    """True when the first record has `choices` (Arena-Hard / FastChat answers), not AlpacaEval `output`."""
    first = next(iter_json_rows(path), None)
    return first is not None and "choices" in first[1] and "output" not in first[1]

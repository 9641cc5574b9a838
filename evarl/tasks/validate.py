"""Constraint rows checked when a prompt file is read, not after generation.

A constraint is an IFEval / IFBench checker id plus keyword arguments (`evarl.tasks.checkers`). The checkers
of `if-verifiable` take their arguments untyped and only fail when they are built or run, which in a training
run or an `evarl eval` is after every response has been generated. `check_row_constraints(row, where)` checks
a prompt row's constraints up front, in either row format:

- IFEval: `instruction_id_list` (ids) with a parallel `kwargs` list of objects;
- evarl records: `constraints`, a list of `{"id": ..., "kwargs": {...}}`.

For each constraint: the id names a known checker; every kwarg name is a parameter of that checker's
`build_description` (read from its signature); every value has the type the checker needs (integers for
counts, strings for words and relations, lists of strings for keyword lists; `None` means "unset", as in the
IFEval data files); and the checker builds with those values (e.g. `relation` must be "less than" or
"at least"). A problem raises `DataError("file:line: field 'kwargs[i].name': problem")`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from evarl.io import DataError
from evarl.registry import PROMPT_ROW_CHECKS

# Value types of the checkers' keyword arguments, by name (the names are shared by IFEval's and IFBench's
# checkers and mean the same thing everywhere; their docstrings say "An integer ...", "A string ...").
INT_ARGS = frozenset(
    {
        "N",
        "capital_frequency",
        "frequency",
        "let_frequency",
        "m",
        "n",
        "n_end",
        "n_start",
        "nth_paragraph",
        "num_bullets",
        "num_highlights",
        "num_paragraphs",
        "num_placeholders",
        "num_sections",
        "num_sentences",
        "num_words",
        "small_n",
        "min_words",
        "max_words",
    }
)
NUMBER_ARGS = frozenset({"percentage"})
STR_LIST_ARGS = frozenset({"keywords", "forbidden_words"})
# everything else the checkers take is a string (words, phrases, relations, language codes, separators)


def _type_problem(name: str, value: Any) -> str | None:
    if name in INT_ARGS:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {value!r}"
    elif name in NUMBER_ARGS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
    elif name in STR_LIST_ARGS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"expected a list of strings, got {value!r}"
    elif not isinstance(value, str):
        return f"expected a string, got {value!r}"
    return None


def accepted_kwargs(checker_cls: Any, instruction_id: str) -> set[str] | None:
    """The keyword arguments a checker's `build_description` takes (None: any, it declares **kwargs and
    lists no keys)."""
    params = inspect.signature(checker_cls.build_description).parameters
    names = {p.name for p in params.values() if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        try:
            keys = checker_cls(instruction_id).get_instruction_args_keys()
        except Exception:  # noqa: BLE001 - a checker that cannot say: accept what its signature names
            return names or None
        return names | set(keys or [])
    return names


def constraint_problem(instruction_id: Any, kwargs: Any) -> tuple[str, str] | None:
    """(field suffix, problem) for one constraint, or None when it is well formed.

    The field suffix is "" for the id, ".name" for a kwarg, or "" with a kwargs-level problem."""
    from evarl.tasks.checkers import registry

    if not isinstance(instruction_id, str):
        return "id", f"expected a checker id string, got {instruction_id!r}"
    reg = registry()
    if instruction_id not in reg:
        return "id", f"unknown instruction id {instruction_id!r} (not an IFEval or IFBench checker)"
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        return "kwargs", f"expected an object of keyword arguments, got {type(kwargs).__name__}"
    given = {k: v for k, v in kwargs.items() if v is not None}
    accepted = accepted_kwargs(reg[instruction_id], instruction_id)
    for name, value in given.items():
        if accepted is not None and name not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            return f"kwargs.{name}", f"{instruction_id} takes no argument {name!r} (it takes: {known})"
        problem = _type_problem(name, value)
        if problem:
            return f"kwargs.{name}", f"{instruction_id}: {problem}"
    try:
        reg[instruction_id](instruction_id).build_description(**given)
    except Exception as e:  # noqa: BLE001 - the checker's own refusal of these values, reported as data
        return "kwargs", f"{instruction_id} cannot be built with {given} ({type(e).__name__}: {e})"
    return None


def check_constraints(ids: Any, kwargs: Any, where: str, error: type[DataError] = DataError) -> None:
    """IFEval-format `instruction_id_list` + `kwargs` of one row; `error` (a DataError) naming `where` and the
    field."""
    if not isinstance(ids, list):
        raise error(f"{where}: field 'instruction_id_list': expected a list, got {type(ids).__name__}")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(kwargs, list):
        raise error(f"{where}: field 'kwargs': expected a list of objects, got {type(kwargs).__name__}")
    if len(kwargs) != len(ids):
        raise error(f"{where}: 'kwargs' has {len(kwargs)} entries but 'instruction_id_list' has {len(ids)}")
    for i, (iid, kw) in enumerate(zip(ids, kwargs)):
        found = constraint_problem(iid, kw)
        if found:
            suffix, problem = found
            if suffix == "id":
                raise error(f"{where}: field 'instruction_id_list': item {i}: {problem}")
            raise error(f"{where}: field 'kwargs[{i}]{suffix[6:]}': {problem}")


def check_constraint_records(constraints: Any, where: str, error: type[DataError] = DataError) -> None:
    """evarl-format `constraints`: a list of `{"id", "kwargs"}` objects; `error` (a DataError) naming `where`
    and the field."""
    if not isinstance(constraints, list):
        raise error(f"{where}: field 'constraints': expected a list, got {type(constraints).__name__}")
    for i, c in enumerate(constraints):
        if not isinstance(c, dict) or "id" not in c or set(c) - {"id", "kwargs"}:
            raise error(f"{where}: field 'constraints[{i}]': expected an object with 'id' and 'kwargs'")
        found = constraint_problem(c["id"], c.get("kwargs"))
        if found:
            suffix, problem = found
            raise error(f"{where}: field 'constraints[{i}].{suffix}': {problem}")


def check_row_constraints(row: dict[str, Any], where: str) -> None:
    """The constraints of one prompt row, in whichever format it carries them (none: nothing to check)."""
    if "instruction_id_list" in row:
        check_constraints(row["instruction_id_list"], row.get("kwargs"), where)
    elif "constraints" in row:
        check_constraint_records(row["constraints"], where)


# evarl.data_io runs every registered row check on each prompt row it reads (it imports no task module)
PROMPT_ROW_CHECKS.register("constraints")(check_row_constraints)

__all__ = [
    "accepted_kwargs",
    "check_constraint_records",
    "check_constraints",
    "check_row_constraints",
    "constraint_problem",
]

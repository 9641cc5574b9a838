"""Property-based checks of the error surface: no input ends in a traceback.

- random `key=value` overrides (keys from the real config schema, values mixing types, NaN, infinities, huge
  numbers, empty strings, unicode) through `evarl validate`: exit 0, or exit 2 with one `evarl: error:` message;
- random prompt / constraint rows (real checker ids and kwarg names with values of any type, and arbitrary JSON)
  through the prompt readers: a Prompt, or a DataError naming the row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evarl.cli import main
from evarl.config import RunConfig
from evarl.data_io import DataError, prompt_from_row


def _schema_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema, sections included (they can be overridden as a whole)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_schema_keys(hints[f.name], key + "."))
    return keys


KEYS = _schema_keys()
SCALARS = st.one_of(
    st.sampled_from(
        [
            "nan",
            ".nan",
            "inf",
            "-inf",
            ".inf",
            "1e400",
            "-0",
            "0",
            "1",
            "2",
            "-1",
            "",
            "~",
            "null",
            "true",
            "false",
            "no",
            "yes",
            "[]",
            "{}",
            "[1, 2]",
            "{a: 1}",
            "9" * 40,
            "0.5",
            "1.5",
            "é✓",
            "a=b",
            "[",
            "{",
        ]
    ),  # fmt: skip
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), SCALARS), min_size=1, max_size=4))
def test_random_overrides_never_crash(
    overrides: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)  # relative paths in random values resolve inside an empty folder
    try:
        rc = main(["validate", *[f"{k}={v}" for k, v in overrides]])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert rc in (0, 2), err
    assert "Traceback" not in out + err and "internal error" not in err
    if rc == 2:
        assert err.count("evarl: error: ") == 1, err
    assert not list(tmp_path.iterdir())  # validation creates nothing


def _checker_kwargs() -> tuple[list[str], list[str]]:
    import inspect

    from evarl.tasks.checkers import registry

    ids = sorted(registry())
    names = sorted(
        {
            p
            for cls in registry().values()
            for p in inspect.signature(cls.build_description).parameters
            if p not in ("self", "kwargs")
        }
    )
    return ids, names


IDS, KWARG_NAMES = _checker_kwargs()
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
KWARG_VALUES = st.one_of(
    JSON, st.sampled_from(["less than", "at least", "en", "cat", 3, 10, ["a", "b"], 2.5, -1, ""])
)
KWARGS = st.dictionaries(st.sampled_from(KWARG_NAMES) | st.text(max_size=6), KWARG_VALUES, max_size=3)
IDS_LIST = st.lists(st.sampled_from(IDS) | st.text(max_size=10), max_size=3)
PROMPT = st.one_of(
    st.text(max_size=20),
    st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "robot", ""]), "content": JSON})
    ),
    JSON,
)


@st.composite
def rows(draw: st.DrawFn) -> dict[str, typing.Any]:
    row: dict[str, typing.Any] = {}
    if draw(st.booleans()):
        row["prompt"] = draw(PROMPT)
    shape = draw(st.sampled_from(["ifeval", "records", "none", "junk"]))
    if shape == "ifeval":
        ids = draw(IDS_LIST)
        row["instruction_id_list"] = ids
        row["kwargs"] = draw(st.one_of(st.lists(KWARGS, min_size=len(ids), max_size=len(ids)), JSON))
    elif shape == "records":
        row["constraints"] = draw(
            st.lists(
                st.fixed_dictionaries({"id": st.sampled_from(IDS) | JSON, "kwargs": KWARGS | JSON}),
                max_size=2,
            )
            | JSON
        )
    elif shape == "junk":
        row.update(
            draw(st.dictionaries(st.sampled_from(["messages", "instruction", "id", "key", "task"]), JSON))
        )
    return row


@settings(max_examples=150, deadline=None)
@given(row=rows())
def test_random_rows_give_a_prompt_or_a_data_error(row: dict[str, typing.Any]) -> None:
    try:
        prompt = prompt_from_row(row, "rows.jsonl:7", 0)
    except DataError as e:
        assert str(e).startswith("rows.jsonl:7"), e
        return
    assert prompt.messages and any(m["role"] == "user" for m in prompt.messages)
    for c in prompt.constraints:  # what the reader lets through builds a checker (no crash after generation)
        from evarl.tasks.checkers import describe

        describe(c.id, c.kwargs)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(row=rows())
def test_random_ifeval_rows_through_the_eval_reader(row: dict[str, typing.Any], tmp_path: Path) -> None:
    from evarl.eval.formats import read_ifeval

    path = tmp_path / "ifeval.jsonl"
    path.write_text(json.dumps({"key": 1, **row}) + "\n", encoding="utf-8")
    try:
        items = read_ifeval(path)
    except DataError as e:
        assert str(e).startswith("ifeval.jsonl:1"), e
        return
    for item in items:
        from evarl.tasks.checkers import describe

        for iid, kw in zip(item.instruction_id_list, item.kwargs, strict=True):
            describe(iid, {k: v for k, v in kw.items() if v is not None})

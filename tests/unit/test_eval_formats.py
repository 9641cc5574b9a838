"""Benchmark file formats (evarl.eval.formats): the readers, conversion to Prompts, errors naming file:line."""

from __future__ import annotations

import json

import pytest

from evarl.eval.formats import (
    EvalFileError,
    load_prompts,
    outputs_by_instruction,
    read_alpaca,
    read_arena,
    read_ifeval,
    read_mtbench,
)
from evarl.io import DataError


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_ifeval_reader_and_prompts(tmp_path):
    p = _jsonl(
        tmp_path / "ifeval.jsonl",
        [{"key": 7, "prompt": "Write.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}],
    )
    (item,) = read_ifeval(p)
    assert item.key == "7" and item.instruction_id_list == ["punctuation:no_comma"]
    (prompt,) = load_prompts(p, "ifeval")
    assert prompt.id == "7" and prompt.text == "Write." and prompt.constraints[0].id == "punctuation:no_comma"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"key": 1, "prompt": "x", "kwargs": []}, "ifeval.jsonl:2: missing field 'instruction_id_list'"),
        (
            {"key": 1, "prompt": "x", "instruction_id_list": ["a", "b"], "kwargs": [{}]},
            "ifeval.jsonl:2: 'kwargs' has 1 entries but 'instruction_id_list' has 2",
        ),
        ({"key": 1, "prompt": 3, "instruction_id_list": []}, "ifeval.jsonl:2: field 'prompt' must be str"),
        ("{not json", "ifeval.jsonl:2: not valid JSON"),
    ],
)
def test_ifeval_errors_name_file_and_line(tmp_path, row, message):
    good = {"key": 0, "prompt": "ok", "instruction_id_list": [], "kwargs": []}
    p = _jsonl(tmp_path / "ifeval.jsonl", [good, row])
    with pytest.raises(DataError) as e:  # EvalFileError, or the record reader's DataError for bad JSON
        read_ifeval(p)
    assert str(e.value).startswith(message) or str(e.value).startswith(f"{p.parent}/{message}")


def test_alpaca_json_array_and_jsonl(tmp_path):
    arr = tmp_path / "model_outputs.json"
    arr.write_text(json.dumps([{"instruction": "a", "output": "A", "generator": "m"}, {"instruction": "b"}]))
    items = read_alpaca(arr)
    assert [(i.instruction, i.output, i.generator) for i in items] == [("a", "A", "m"), ("b", None, None)]
    with pytest.raises(EvalFileError, match=r"model_outputs.json:2: missing field 'output'"):
        read_alpaca(arr, require_output=True)
    dup = _jsonl(
        tmp_path / "dup.jsonl", [{"instruction": "a", "output": "1"}, {"instruction": "a", "output": "2"}]
    )
    with pytest.raises(EvalFileError, match="dup.jsonl:2: duplicate instruction"):
        outputs_by_instruction(read_alpaca(dup), "dup.jsonl")
    (pr,) = load_prompts(
        _jsonl(tmp_path / "ae.jsonl", [{"instruction": "hi", "dataset": "vicuna"}]), "alpaca"
    )
    assert pr.text == "hi" and pr.category == "vicuna"


def test_mtbench_reader(tmp_path):
    p = _jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": 81, "category": "writing", "turns": ["t1", "t2"]},
            {"question_id": 111, "category": "math", "turns": ["m1", "m2"], "reference": ["r1", "r2"]},
        ],
    )
    qs = read_mtbench(p)
    assert qs[0].question_id == "81" and qs[1].reference == ["r1", "r2"]
    prompts = load_prompts(p, "mtbench")
    assert prompts[0].meta["turns"] == ["t1", "t2"] and prompts[0].text == "t1"
    bad = _jsonl(
        tmp_path / "mtbench.jsonl", [{"question_id": 1, "category": "x", "turns": ["a"]}, {"question_id": 2}]
    )
    with pytest.raises(EvalFileError, match="mtbench.jsonl:2: missing field 'turns'"):
        read_mtbench(bad)


def test_arena_v01_and_v2_rows(tmp_path):
    p = _jsonl(
        tmp_path / "arena.jsonl",
        [
            {
                "question_id": "q1",
                "category": "arena-hard-v0.1",
                "cluster": "c",
                "turns": [{"content": "Hello"}],
            },
            {"uid": "u2", "category": "hard_prompt", "prompt": "World"},
        ],
    )
    qs = read_arena(p)
    assert [(q.question_id, q.prompt) for q in qs] == [("q1", "Hello"), ("u2", "World")]
    assert qs[0].meta == {"cluster": "c"}
    bad = _jsonl(tmp_path / "a.jsonl", [{"question_id": "q"}])
    with pytest.raises(EvalFileError, match="a.jsonl:1: missing field 'turns'"):
        read_arena(bad)


def test_default_format_prompt_records_and_trl_rows(tmp_path):
    p = _jsonl(
        tmp_path / "prompts.jsonl",
        [
            {
                "id": "p1",
                "messages": [{"role": "user", "content": "x"}],
                "constraints": [{"id": "punctuation:no_comma", "kwargs": {}}],
            },
            {"prompt": [{"role": "user", "content": "y"}]},
            {"prompt": "z", "id": "p3"},
        ],
    )
    ps = load_prompts(p, "default")
    assert [q.id for q in ps] == ["p1", "prompts-2", "p3"] and ps[0].constraints[
        0
    ].id == "punctuation:no_comma"
    assert [q.text for q in ps] == ["x", "y", "z"]
    bad = _jsonl(tmp_path / "b.jsonl", [{"prompt": [{"role": "user"}]}])
    with pytest.raises(EvalFileError, match="b.jsonl:1: field 'prompt' must be a non-empty list"):
        load_prompts(bad, "default")
    with pytest.raises(ValueError, match="unknown eval format"):
        load_prompts(p, "csv")
    with pytest.raises(DataError, match="nope.jsonl: file does not exist"):
        load_prompts(tmp_path / "nope.jsonl", "default")


def test_default_format_reads_dataset_sources(tmp_path):
    """`evarl eval --format default` takes the sources `task.train_file` takes (evarl.datasets_in)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": "b"}]), tmp_path / "p.parquet")
    assert [q.text for q in load_prompts(tmp_path / "p.parquet", "default")] == ["a", "b"]

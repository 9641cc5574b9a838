import json
from pathlib import Path

import pytest

from evarl.datasets_in import read_prompts
from evarl.io import DataError, write_jsonl


def _write(p: Path, lines: list[str]) -> Path:
    p.write_text("\n".join(lines) + "\n")
    return p


def test_formats(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": "Hello"}),
            json.dumps({"id": "b", "prompt": [{"role": "user", "content": "Hi"}]}),
            json.dumps(
                {
                    "key": 7,
                    "prompt": "Write.",
                    "instruction_id_list": ["punctuation:no_comma"],
                    "kwargs": [{}],
                }
            ),
        ],
    )
    ps = read_prompts(p)
    assert [x.id for x in ps] == ["0", "b", "7"]
    assert ps[2].constraints[0].id == "punctuation:no_comma"
    assert ps[1].text == "Hi"


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok"}), "{not json"])
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        read_prompts(p)


def test_empty_prompt_names_field(tmp_path: Path) -> None:
    p = _write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok"}), json.dumps({"prompt": "  "})])
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'prompt': empty prompt"):
        read_prompts(p)


def test_missing_field_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing field 'prompt'"):
        read_prompts(_write(tmp_path / "a.jsonl", [json.dumps({"text": "x"})]))
    with pytest.raises(DataError, match="duplicate id 'x'"):
        read_prompts(_write(tmp_path / "b.jsonl", [json.dumps({"id": "x", "prompt": "a"})] * 2))


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    write_jsonl(p, [{"a": 1}])

    def bad():
        yield {"a": 2}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(p, bad())
    assert p.read_text() == '{"a": 1}\n'  # the finished file is untouched
    assert list(tmp_path.iterdir()) == [p]


def test_ifbench_file_reads_and_unknown_instruction_names_line(tmp_path: Path) -> None:
    # IFBench_test rows carry every kwargs key of the dataset schema, most of them null
    row = {
        "key": 7,
        "prompt": "Describe rain. Use at least 2 different coordinating conjunctions in the response.",
        "instruction_id_list": ["count:conjunctions"],
        "kwargs": [{"small_n": 2, "N": None, "percentage": None}],
    }
    p = tmp_path / "ifbench.jsonl"
    p.write_text(json.dumps(row) + "\n")
    (prompt,) = read_prompts(p)
    assert prompt.id == "7" and prompt.constraints[0].kwargs == {"small_n": 2}
    bad = dict(row, instruction_id_list=["count:conjunctionz"])
    p.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"ifbench\.jsonl:2: field 'instruction_id_list'.*count:conjunctionz"):
        read_prompts(p)

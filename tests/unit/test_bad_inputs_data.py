"""Bad prompt data (task.train_file / task.heldout_file through evarl.datasets_in): each case exits with status 2
from `evarl validate` (and `evarl run`, before a run directory exists), prints one `evarl: error:` message naming
the column, the file and the row where there is one, no traceback, and leaves every file that was there unchanged
(by hash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_input import refused


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


def _config(tmp_path: Path, train: Path | str, **task: object) -> Path:
    lines = ["task:", "  name: file", f"  train_file: {train}", "  train_prompts: 1"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in task.items()]
    lines += [f"output_dir: {tmp_path / 'runs'}"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _refused(args: list[str], root: Path, capsys: pytest.CaptureFixture[str], *culprits: str) -> str:
    # `datasets` lock files in the tmp HF_HOME come and go
    return refused(args, root, capsys, *culprits, ignore_suffixes=(".lock",))


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mapped_column_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _parquet(tmp_path / "p.parquet", [{"text": "Hello"}])
    cfg = _config(tmp_path, data, columns={"prompt": "question"})
    _refused(
        ["validate", str(cfg)],
        tmp_path,
        capsys,
        "task.train_file:",
        "p.parquet",
        "no column 'question'",
        "task.columns.prompt",
        "columns: text",
    )


def test_no_prompt_column_and_no_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "p.csv"
    data.write_text("text,label\nHello,1\n")
    cfg = _config(tmp_path, data)
    _refused(
        ["validate", str(cfg)],
        tmp_path,
        capsys,
        "p.csv",
        "no column 'prompt', 'messages' or 'instruction'",
        "task.columns.prompt",
    )


def test_mapped_column_missing_in_a_jsonl_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _jsonl(tmp_path / "p.jsonl", [{"question": "a"}, {"q": "b"}])
    cfg = _config(tmp_path, data, columns={"prompt": "question"})
    _refused(
        ["validate", str(cfg)], tmp_path, capsys, "p.jsonl:2", "no column 'question'", "task.columns.prompt"
    )


def test_prompt_column_of_ints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _parquet(tmp_path / "p.parquet", [{"question": 1}, {"question": 2}])
    cfg = _config(tmp_path, data, columns={"prompt": "question"})
    _refused(
        ["validate", str(cfg)],
        tmp_path,
        capsys,
        "p.parquet:row 1",
        "field 'prompt'",
        "got int",
        "column 'question'",
    )


def test_kwargs_entries_not_mappings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = {"question": "Write.", "ids": ["punctuation:no_comma"], "kw": [3]}
    data = _jsonl(tmp_path / "p.jsonl", [row])
    cols = {"prompt": "question", "instruction_id_list": "ids", "kwargs": "kw"}
    cfg = _config(tmp_path, data, columns=cols)
    _refused(["validate", str(cfg)], tmp_path, capsys, "p.jsonl:1", "field 'kwargs[0]'", "column 'kw'")


def test_kwargs_not_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = {"prompt": "Write.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": {"a": 1}}
    cfg = _config(tmp_path, _jsonl(tmp_path / "p.jsonl", [row]))
    _refused(["validate", str(cfg)], tmp_path, capsys, "p.jsonl:1", "field 'kwargs'", "got dict")


def test_message_content_of_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    bad = [{"role": "user", "content": "hi"}, {"role": "user", "content": "7"}]
    data = _jsonl(
        tmp_path / "c.jsonl", [{"messages": chat}, {"messages": [bad[0], {"role": "user", "content": 7}]}]
    )
    cfg = _config(tmp_path, data)
    _refused(["validate", str(cfg)], tmp_path, capsys, "c.jsonl:2", "field 'messages[1].content'", "got int")


def test_unreadable_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "broken.parquet"
    data.write_bytes(b"PAR1 this is not a parquet file")
    cfg = _config(tmp_path, data)
    _refused(["validate", str(cfg)], tmp_path, capsys, "broken.parquet", "cannot read it as a dataset")


def test_dataset_id_not_in_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "nobody/no_such_prompts")
    _refused(
        ["validate", str(cfg)],
        tmp_path,
        capsys,
        "task.train_file:",
        "nobody/no_such_prompts",
        "not a dataset in the local Hugging Face caches",
    )


def test_unknown_field_in_the_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _jsonl(tmp_path / "p.jsonl", [{"question": "a"}])
    cfg = _config(tmp_path, data, columns={"promt": "question"})
    _refused(["validate", str(cfg)], tmp_path, capsys, "task.columns.promt: unknown field")


def test_missing_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "data"
    d.mkdir()
    _parquet(d / "train.parquet", [{"prompt": "a"}])
    _parquet(d / "test.parquet", [{"prompt": "b"}])
    cfg = _config(tmp_path, d, split="dev")
    _refused(["validate", str(cfg)], tmp_path, capsys, "no split 'dev'", "splits: ")


def test_json_array_with_a_non_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "p.json"
    data.write_text(json.dumps([{"prompt": "a"}, "b"]))
    cfg = _config(tmp_path, data)
    _refused(["validate", str(cfg)], tmp_path, capsys, "p.json:entry 2", "expected a JSON object")


def test_run_refuses_before_making_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _parquet(tmp_path / "p.parquet", [{"question": 1}])
    cfg = _config(tmp_path, data, columns={"prompt": "question"})
    _refused(["run", str(cfg), "--quiet"], tmp_path, capsys, "p.parquet:row 1", "column 'question'")
    assert not (tmp_path / "runs").exists()


def test_unsupported_file_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "prompts.txt"
    data.write_text("Write a poem.\n")
    cfg = _config(tmp_path, data)
    _refused(["validate", str(cfg)], tmp_path, capsys, "prompts.txt", "unsupported file type '.txt'")

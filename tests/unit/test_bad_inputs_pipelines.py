"""Bad inputs of the pipeline recipes: each exits 2 with one line naming the culprit (file:line:field or the config
key), prints no traceback, and leaves pre-existing files unchanged. No model is loaded: every check fails first."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evarl.cli import main

ROOT = Path(__file__).parents[2]


def _digest(path: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, *needles: str) -> str:
    before = _digest(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert _digest(tmp_path) == before
    return err


MSG = {"role": "user", "content": "Name a colour."}


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}, ":2: field 'messages[0]': missing role"),
        ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]},
         ":2: field 'messages[0].content': empty user turn"),
        ({"messages": [MSG, {"role": "assistant", "content": ""}]}, ":2: field 'messages[1].content': empty assistant"),
        ({"messages": [MSG, {"role": "robot", "content": "x"}]}, ":2: field 'messages[1].role': unknown role"),
        ({"messages": [MSG]}, ":2: field 'messages': no assistant turn"),
    ],
)  # fmt: skip
def test_sft_file_with_a_bad_turn(
    row: dict, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "sft.jsonl"
    good = {"messages": [MSG, {"role": "assistant", "content": "Blue."}]}
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "out"
    _fails(["sft", "--data", str(data), "--out", str(out)], capsys, tmp_path, f"{data}{needle}")
    assert not out.exists()


def test_eft_row_without_a_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eft = tmp_path / "eft.jsonl"
    eft.write_text(json.dumps({"prompt": "q", "response": "r", "rationale": "fine"}) + "\n")
    _fails(
        ["sft", "--eft", str(eft), "--out", str(tmp_path / "o")],
        capsys,
        tmp_path,
        f"{eft}:1: field 'score': missing",
    )


def test_sft_without_data_and_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["sft", "--out", str(tmp_path / "o")], capsys, tmp_path, "--data", "--eft")
    _fails(
        ["sft", "--eft", "embedded", "--out", str(tmp_path / "o"), "--lr", "0", "--epochs", "0"],
        capsys,
        tmp_path,
        "--lr: must be > 0",
        "--epochs: must be > 0",
    )


def test_missing_sft_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(
        ["sft", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")],
        capsys,
        tmp_path,
        "nope.jsonl",
    )


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["solver.pairs=teacher_demo"], "solver.teacher: solver.pairs=teacher_demo needs a teacher"),
        (["solver.pairs=demo"], "solver.pairs: must be reward or teacher_demo"),
        (["solver.pairs=teacher_demo", "solver.teacher=m", "solver.teacher_endpoint=localhost:8000"],
         "solver.teacher_endpoint:"),
        (["solver.teacher=embedded"], "solver.teacher: only for solver.pairs=teacher_demo"),
        (["solver.history=everything"], "solver.history: must be round or all"),
        (["solver.offline_pairs=/no/such.jsonl"], "solver.offline_pairs: file '/no/such.jsonl' does not exist"),
        (["solver.eft_data=[/no/eft.jsonl]"], "solver.eft_data[0]: file '/no/eft.jsonl' does not exist"),
        (["solver.sft_epochs=0"], "solver.sft_epochs: must be > 0"),
        (["creator.methods=[fewshot_selfinstruct]", "creator.filters=[rouge, rogue]"], "creator.filters[1]"),
    ],
)  # fmt: skip
def test_bad_pipeline_config_keys(
    overrides: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(["validate", *overrides], capsys, tmp_path, needle)


def test_bad_offline_pairs_row_stops_the_run_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    off = tmp_path / "offline.jsonl"
    off.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + '{"prompt": "q"}\n')
    _fails(
        ["run", f"output_dir={tmp_path / 'runs'}", f"solver.offline_pairs={off}"],
        capsys,
        tmp_path,
        "solver.offline_pairs:",
        "offline.jsonl:2: missing field 'chosen'",
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"prompt": "q", "responses": ["only one"], "reference": [1]}, ":1: field 'responses'"),
        (
            {"prompt": "q", "responses": ["a", "b"], "reference": [1]},
            ":1: field 'reference': expected 2 numbers",
        ),
        ({"prompt": "", "responses": ["a", "b"], "reference": [1, 2]}, ":1: field 'prompt'"),
        (
            {"prompt": "q", "responses": ["a", "b"]},
            ":1: field 'reference': missing, and no --reference model",
        ),
    ],
)
def test_eval_rm_bad_ranking_rows(
    row: dict, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rank.jsonl"
    data.write_text(json.dumps(row) + "\n")
    _fails(
        ["eval-rm", "--kind", "judge", "--model", "embedded", "--data", str(data)], capsys, tmp_path, needle
    )


def test_eval_rm_pairwise_kind_cannot_rank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "rank.jsonl"
    data.write_text(json.dumps({"prompt": "q", "responses": ["a", "b"], "reference": [1, 2]}) + "\n")
    _fails(
        ["eval-rm", "--kind", "pairwise", "--model", "embedded", "--data", str(data)],
        capsys,
        tmp_path,
        "--kind: ranking metrics score each response",
    )

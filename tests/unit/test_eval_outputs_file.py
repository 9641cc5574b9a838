"""`evarl eval --format ifeval --outputs FILE` scores a file of responses without loading a model (IFEval's
{prompt, response} JSONL or AlpacaEval's [{instruction, output}]), matched to the prompts by their text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evarl.cli import main
from evarl.tasks.default import heldout_prompts


def _prompts(tmp_path: Path, k: int = 5) -> tuple[Path, list]:
    ps = heldout_prompts(k)
    p = tmp_path / "ifeval.jsonl"
    p.write_text(
        "".join(
            json.dumps(
                {
                    "key": i,
                    "prompt": x.text,
                    "instruction_id_list": [c.id for c in x.constraints],
                    "kwargs": [c.kwargs for c in x.constraints],
                }
            )
            + "\n"
            for i, x in enumerate(ps)
        )
    )
    return p, ps


@pytest.mark.parametrize("fmt", ["ifeval-jsonl", "alpaca-json"])
def test_scores_a_response_file_and_reports_unmatched(tmp_path: Path, capsys, fmt: str) -> None:
    prompts_file, ps = _prompts(tmp_path)
    answers = {x.text: "HELLO WORLD. " * (i + 1) for i, x in enumerate(ps[:4])}  # the 5th has no response
    answers["a prompt that is not in the set"] = "x"
    out_file = tmp_path / ("responses.jsonl" if fmt == "ifeval-jsonl" else "outputs.json")
    if fmt == "ifeval-jsonl":
        out_file.write_text(
            "".join(json.dumps({"prompt": k, "response": v}) + "\n" for k, v in answers.items())
        )
    else:
        out_file.write_text(json.dumps([{"instruction": k, "output": v} for k, v in answers.items()]))
    rc = main(
        ["eval", "--format", "ifeval", "--prompts", str(prompts_file), "--outputs", str(out_file),
         "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "1 prompt(s) without a response were left out; 1 response(s) matched no prompt" in err
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())["heldout"]
    assert res["n_prompts"] == 4 and res["ifeval"]["n_prompts"] == 4
    assert res["intervals"]["prompt_loose"]["n"] == 4
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["outputs"] == {
        "file": str(out_file),
        "matched": 4,
        "unmatched_prompts": 1,
        "unmatched_outputs": 1,
    }
    gens = [json.loads(x) for x in (tmp_path / "ev" / "eval_generations.jsonl").read_text().splitlines()]
    assert [g["text"] for g in gens] == [answers[x.text] for x in ps[:4]]


@pytest.mark.parametrize(
    "content, culprit",
    [
        ('{"prompt": "nothing matches", "response": "x"}\n', "none of the 1 responses"),
        ('{"question": "q", "answer": "a"}\n', "expected IFEval's {prompt, response}"),
        ('{"prompt": "q", "response": 3}\n', "response: expected a string"),
    ],
)
def test_bad_response_files(tmp_path: Path, capsys, content: str, culprit: str) -> None:
    prompts_file, _ = _prompts(tmp_path, 2)
    bad = tmp_path / "responses.jsonl"
    bad.write_text(content)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    rc = main(
        ["eval", "--format", "ifeval", "--prompts", str(prompts_file), "--outputs", str(bad),
         "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and culprit in err and "Traceback" not in err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before

"""Evaluation on a real (tiny random) Llama with SmolLM2's tokenizer: held-out evaluation on the shipped
default task with the verifier, pairwise and MT-Bench judging with a real model as judge (whose replies do
not parse: every one must be counted as a failure, never as a loss), and `evarl eval` / `evarl report`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from evarl.eval.formats import MTBenchQuestion
from evarl.eval.heldout import evaluate_heldout
from evarl.eval.mtbench import answer_mtbench, grade_mtbench, mtbench_metrics
from evarl.eval.winrate import judge_pairwise, summarize_judgements
from evarl.generation.base import SamplingParams
from evarl.generation.hf import HFGenerator

GREEDY = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, seed=0)


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.from_path(str(tiny_model_dir), batch_size=8)


def test_heldout_on_default_task_is_reproducible(gen: HFGenerator, tmp_path: Path) -> None:
    from evarl.rewards.verifier import VerifierReward
    from evarl.tasks.default import heldout_prompts

    prompts = heldout_prompts(3)
    res = evaluate_heldout(gen, prompts, VerifierReward(), GREEDY, tmp_path / "a")
    h = res["heldout"]
    assert h["n"] + h["failed"] == 3
    assert set(h["ifeval"]) >= {"prompt_strict", "prompt_loose", "inst_strict", "inst_loose"}
    assert all(0.0 <= h["ifeval"][k] <= 1.0 for k in ("prompt_strict", "inst_loose"))
    assert h["ifeval"]["prompt_strict"] <= h["ifeval"]["prompt_loose"]
    assert 0 < h["mean_length"] <= 6
    rows = (tmp_path / "a" / "eval_generations.jsonl").read_text().splitlines()
    assert len(rows) == 3 and {json.loads(r)["prompt_id"] for r in rows} == {p.id for p in prompts}
    evaluate_heldout(gen, prompts, VerifierReward(), GREEDY, tmp_path / "b")
    for name in ("eval.json", "eval_generations.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_real_judge_failures_are_counted_not_losses(gen: HFGenerator) -> None:
    js = judge_pairwise(gen, ["Say hi.", "Name a colour."], ["hi", "red"], ["hello", "blue"])
    assert all(isinstance(j.raw[0], str) and isinstance(j.raw[1], str) for j in js)  # raw replies kept
    s = summarize_judgements(js, n_boot=50)
    assert s["n_total"] + s["n_failed"] == 2
    assert s["n_wins"] + s["n_losses"] + s["n_ties"] == s["n_total"]
    failed = [j for j in js if j.preference is None]
    assert all(None in j.verdicts for j in failed)

    qs = [
        MTBenchQuestion("1", "writing", ["Write one line.", "Shorter."]),
        MTBenchQuestion("2", "math", ["1+1?"]),
    ]
    answers = answer_mtbench(gen, qs, GREEDY)
    assert [len(a.turns) for a in answers] == [2, 1]
    grades = grade_mtbench(gen, qs, answers, SamplingParams(n=1, temperature=0.0, max_new_tokens=8))
    assert [(g.question_id, g.turn) for g in grades] == [("1", 1), ("1", 2), ("2", 1)]
    m = mtbench_metrics(grades)
    assert m["n_graded"] + m["n_failed"] == 3
    assert all(g.failed == (g.score is None) for g in grades)


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_eval_and_report(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from evarl.cli import main

    model = str(tiny_model_dir)
    common = ["--model", model, "--max-new-tokens", "6", "--bootstrap", "50"]
    ae = _write(tmp_path / "ae.jsonl", [{"instruction": "Say hi."}, {"instruction": "Name a fruit."}])
    base = tmp_path / "baseline.json"
    base.write_text(
        json.dumps(
            [
                {"instruction": "Say hi.", "output": "Hello!", "generator": "ref"},
                {"instruction": "Name a fruit.", "output": "Apple.", "generator": "ref"},
            ]
        )
    )
    out = tmp_path / "ae-out"
    rc = main(["eval", *common, "--prompts", str(ae), "--format", "alpaca", "--baseline-outputs", str(base)]
              + ["--judge", model, "--out", str(out)])  # fmt: skip
    assert rc == 0
    outputs = json.loads((out / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == ["Say hi.", "Name a fruit."]
    wr = json.loads((out / "winrate.json").read_text())
    assert wr["n_total"] + wr["n_failed"] == 2 and wr["baseline"] == "ref"
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 2

    ife = _write(
        tmp_path / "ifeval.jsonl",
        [
            {
                "key": 1,
                "prompt": "Write without commas.",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
            }
        ],
    )
    rc = main(["eval", *common, "--prompts", str(ife), "--format", "ifeval", "--out", str(tmp_path / "if")])
    assert rc == 0
    ev = json.loads((tmp_path / "if" / "eval.json").read_text())["heldout"]
    assert ev["ifeval"]["n_instructions"] == 1 and ev["n"] == 1

    mt = _write(
        tmp_path / "q.jsonl", [{"question_id": 81, "category": "writing", "turns": ["Write.", "Again."]}]
    )
    rc = main(["eval", *common, "--prompts", str(mt), "--format", "mtbench", "--judge", model]
              + ["--judge-max-new-tokens", "8", "--out", str(tmp_path / "mt")])  # fmt: skip
    assert rc == 0
    mres = json.loads((tmp_path / "mt" / "mtbench.json").read_text())
    assert mres["n_graded"] + mres["n_failed"] == 2
    answers = [json.loads(x) for x in (tmp_path / "mt" / "model_answers.jsonl").read_text().splitlines()]
    assert len(answers[0]["turns"]) == 2

    capsys.readouterr()
    rc = main(["eval", "--model", model, "--prompts", str(ae), "--format", "alpaca"]
              + ["--baseline-outputs", str(base), "--out", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2 and "--baseline-outputs: a win rate needs a --judge" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.jsonl", [{"key": 1, "prompt": "x"}])
    rc = main(
        ["eval", "--model", model, "--prompts", str(bad), "--format", "ifeval", "--out", str(tmp_path / "y")]
    )
    assert rc == 2 and "bad.jsonl:1: missing field 'instruction_id_list'" in capsys.readouterr().err

    spec = importlib.util.spec_from_file_location(
        "_eval_report_fixture", Path(__file__).resolve().parents[1] / "unit" / "test_eval_report.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = mod.make_run(tmp_path / "runs", "demo", rounds=1)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists() and (run / "plots" / "demo-heldout.png").exists()
    assert main(["report", str(tmp_path / "missing-run")]) == 2

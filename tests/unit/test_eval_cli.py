"""`evarl eval` / `evarl report` argument handling without loading models: option validation (options that
do not apply are refused, never ignored) and baseline matching for AlpacaEval and Arena-Hard files."""

from __future__ import annotations

import argparse
import json

import pytest

from evarl.config import ConfigError
from evarl.eval.cli import _baseline, add_subcommands, cmd_eval
from evarl.eval.formats import EvalFileError, is_model_answers_file, load_prompts, read_model_answers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evarl")
    add_subcommands(p.add_subparsers(dest="command"))
    return p


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_parser_defaults_come_from_eval_config(tmp_path):
    ns = _parser().parse_args(["eval", "--prompts", "p.jsonl", "--out", str(tmp_path)])
    assert (ns.model, ns.backend, ns.fmt, ns.temperature, ns.max_new_tokens) == (
        "embedded",
        "hf",
        "default",
        0.0,
        96,
    )
    assert ns.fn is cmd_eval
    r = _parser().parse_args(["report", "runs/a", "runs/b", "--out", "x"])
    assert r.run_dirs == ["runs/a", "runs/b"] and r.out == "x"


@pytest.mark.parametrize(
    ("fmt", "extra", "message"),
    [
        ("ifeval", ["--judge", "embedded"], "not used with --format ifeval"),
        ("alpaca", ["--baseline-outputs", "b.json"], "a win rate needs a --judge"),
        ("alpaca", ["--judge", "embedded"], "needs --baseline-outputs"),
        ("mtbench", ["--outputs", "o.json"], "not used with --format mtbench"),
    ],
)
def test_inapplicable_options_are_refused(tmp_path, fmt, extra, message):
    rows = {
        "ifeval": [{"key": 1, "prompt": "x", "instruction_id_list": [], "kwargs": []}],
        "alpaca": [{"instruction": "x"}],
        "mtbench": [{"question_id": 1, "category": "c", "turns": ["a", "b"]}],
    }[fmt]
    f = _jsonl(tmp_path / "p.jsonl", rows)
    ns = _parser().parse_args(
        ["eval", "--prompts", str(f), "--format", fmt, "--out", str(tmp_path / "o"), *extra]
    )
    with pytest.raises(ConfigError, match=message):
        cmd_eval(ns)


def test_baseline_alpaca_and_arena_answers(tmp_path):
    q = _jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": "a1", "turns": [{"content": "Q one"}]},
            {"question_id": "a2", "turns": [{"content": "Q two"}]},
        ],
    )
    prompts = load_prompts(q, "arena")
    answers = _jsonl(
        tmp_path / "gpt-4-0314.jsonl",
        [
            {
                "question_id": "a2",
                "model_id": "gpt-4-0314",
                "choices": [{"index": 0, "turns": [{"content": "A two"}]}],
            },
            {"question_id": "a1", "model_id": "gpt-4-0314", "choices": [{"index": 0, "turns": ["A one"]}]},
        ],
    )
    assert is_model_answers_file(answers) and read_model_answers(answers) == {"a1": "A one", "a2": "A two"}
    ns = argparse.Namespace(fmt="arena", baseline_outputs=str(answers))
    texts, name = _baseline(ns, prompts, [p.text for p in prompts])
    assert texts == ["A one", "A two"] and name == "gpt-4-0314"

    ae = tmp_path / "ref.json"
    ae.write_text(json.dumps([{"instruction": "Q two", "output": "B", "generator": "ref"}]))
    assert not is_model_answers_file(ae)
    ns = argparse.Namespace(fmt="arena", baseline_outputs=str(ae))
    with pytest.raises(ConfigError, match="1 instruction"):
        _baseline(ns, prompts, [p.text for p in prompts])
    texts, name = _baseline(ns, prompts[1:], ["Q two"])
    assert texts == ["B"] and name == "ref"

    bad = _jsonl(tmp_path / "ans.jsonl", [{"question_id": "x", "choices": []}])
    with pytest.raises(
        EvalFileError, match=r"ans.jsonl:1: field 'choices\[0\].turns' must be a non-empty list"
    ):
        read_model_answers(bad)


class _Echo:
    name = "echo"

    def generate(self, conversations, params):
        from evarl.generation.base import GenOutput

        return [[GenOutput("answer " + c[-1]["content"][:20], 3, "stop")] for c in conversations]


class _Judge:
    """MT-Bench: rates by category word in the prompt; pairwise: prefers the model's 'answer ...' output."""

    name = "judge"

    def generate(self, conversations, params):
        from evarl.generation.base import GenOutput

        outs = []
        for c in conversations:
            t = c[-1]["content"]
            if "## Output (a)" in t:
                a = t.split("## Output (a)")[1].split("## Output (b)")[0]
                reply = "Output (a)" if "answer" in a else "Output (b)"
            else:
                reply = "Rating: [[8]]" if "poem" in t else "Rating: [[4]]"
            outs.append([GenOutput(reply, 3, "stop")])
        return outs


def test_cmd_eval_mtbench_and_pairwise_with_fake_models(tmp_path, monkeypatch, capsys):
    import evarl.eval.cli as cli

    monkeypatch.setattr(cli, "_generator", lambda *a, **k: _Echo())
    monkeypatch.setattr(cli, "_judge", lambda ns: _Judge())
    q = _jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": 1, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
            {"question_id": 2, "category": "math", "turns": ["2+2?", "3+3?"]},
            {"question_id": 3, "category": "coding", "turns": ["Sort a list.", "In C."]},
        ],
    )
    out = tmp_path / "mt"
    ns = _parser().parse_args(
        ["eval", "--prompts", str(q), "--format", "mtbench", "--judge", "x", "--out", str(out)]
    )
    assert cmd_eval(ns) == 0
    m = json.loads((out / "mtbench.json").read_text())
    # the writing question's turn-2 prompt still contains the poem request: 8 for both of its turns
    assert m["categories"] == {"coding": 4.0, "math": 4.0, "writing": 8.0}
    assert m["avg"] == pytest.approx((8 + 8 + 4 + 4 + 4 + 4) / 6)
    assert (out / "mtbench_radar.png").read_bytes().startswith(b"\x89PNG")

    ae = _jsonl(tmp_path / "ae.jsonl", [{"instruction": "Say hi."}, {"instruction": "Count."}])
    base = _jsonl(
        tmp_path / "base.jsonl",
        [
            {"instruction": "Say hi.", "output": "hello", "generator": "ref"},
            {"instruction": "Count.", "output": "1 2"},
        ],
    )
    out2 = tmp_path / "ae"
    ns = _parser().parse_args(
        ["eval", "--prompts", str(ae), "--format", "alpaca", "--baseline-outputs", str(base), "--judge", "x"]
        + ["--bootstrap", "20", "--out", str(out2)]
    )
    assert cmd_eval(ns) == 0
    wr = json.loads((out2 / "winrate.json").read_text())
    assert (wr["win_rate"], wr["n_wins"], wr["baseline"]) == (100.0, 2, "ref")
    assert json.loads((out2 / "summary.json").read_text())["winrate"] == wr
    # the outputs file feeds back in with --outputs: same verdicts without generating
    out3 = tmp_path / "ae2"
    ns = _parser().parse_args(
        ["eval", "--prompts", str(ae), "--format", "alpaca", "--outputs", str(out2 / "model_outputs.json")]
        + ["--baseline-outputs", str(base), "--judge", "x", "--bootstrap", "20", "--out", str(out3)]
    )
    assert cmd_eval(ns) == 0
    assert json.loads((out3 / "winrate.json").read_text())["win_rate"] == 100.0

"""evarl.eval.alpaca against the installed `alpaca-eval` package: the annotator read from the package, the order
randomised and un-swapped as AlpacaEval does, the log-prob-weighted preference of its parser, and the LC win rate
equal to the package's own `get_length_controlled_winrate` on the same annotations (its hub download patched
with a difficulty table the test writes). Skipped when `alpaca_eval` is not importable (CI's clean venv: it is
the optional extra `evarl[alpaca]`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

alpaca_eval = pytest.importorskip(
    "alpaca_eval", reason="alpaca-eval is the optional extra evarl[alpaca] (pip install 'evarl[alpaca]')"
)

from alpaca_eval import utils as ae_utils  # noqa: E402
from alpaca_eval.metrics import glm_winrate  # noqa: E402

from evarl.eval.alpaca import (  # noqa: E402
    alpaca_summary,
    annotate,
    load_annotator,
    read_alpaca_eval_set,
    supported_annotators,
)
from evarl.eval.winrate import length_controlled_win_rate  # noqa: E402


class ScriptedJudge:
    """Answers from the prompt text: `score(first_output, second_output) -> (P(m), P(M))` where "m" labels the
    output shown first. Instructions containing 'UNPARSABLE' get top log-probs without either label."""

    def __init__(self, score: Any) -> None:
        self.score = score
        self.last_error = None
        self.seen: list[list[dict[str, str]]] = []

    def first_token_logprobs(self, conversations, labels, top_k):
        out = []
        for conv in conversations:
            self.seen.append(conv)
            user = conv[-1]["content"]
            if "UNPARSABLE" in user:
                out.append([{"token": "Both", "logprob": -0.1}, {"token": "The", "logprob": -2.5}])
                continue
            first = user.split('"model_identifier": "m",')[1].split('"""')[1]
            second = user.split('"model_identifier": "M",')[1].split('"""')[1]
            pm, pM = self.score(first, second)
            out.append(
                [
                    {"token": "m", "logprob": math.log(pm)},
                    {"token": "M", "logprob": math.log(pM)},
                    {"token": "Both", "logprob": math.log(max(1e-6, 1 - pm - pM))},
                ]
            )
        return out


def _switched(instruction: str, seed: int = 0) -> bool:
    """AlpacaEval's own rule for showing output_2 first (RandomSwitchTwoColumnsProcessor, column
    is_switched_outputs, seeded on the instruction text)."""
    return ae_utils.random_seeded_choice(
        seed="is_switched_outputs" + instruction + str(seed), choices=[False, True]
    )


def test_annotator_is_read_from_the_installed_package() -> None:
    ann = load_annotator("weighted_alpaca_eval_gpt4_turbo")
    path = Path(alpaca_eval.__file__).parent / "evaluators_configs" / ann.template_file
    assert ann.template == path.read_text(encoding="utf-8")
    assert ann.numerator_token == "m" and ann.denominator_tokens == ["m", "M"] and not ann.is_binarize
    assert ann.top_logprobs == 5 and "alpaca-eval" in ann.source
    names = supported_annotators()
    assert "weighted_alpaca_eval_gpt4_turbo" in names and "alpaca_eval_clf_gpt4_turbo" in names
    assert "alpaca_eval_gpt4" not in names  # ranking parser over generated text: not a first-token annotator


def test_order_is_randomised_and_the_weighted_preference_unswapped() -> None:
    ann = load_annotator("weighted_alpaca_eval_gpt4_turbo")
    instructions = [f"Write item {k}." for k in range(24)] + ["UNPARSABLE request"]
    model = [f"model answer {k}" for k in range(25)]
    base = [f"base answer {k}" for k in range(25)]
    # a pure position bias: P(first) = 0.3, P(second) = 0.1, whatever the outputs say
    judge = ScriptedJudge(lambda first, second: (0.3, 0.1))
    rows = annotate(judge, ann, instructions, model, base, "mine", "gpt4_turbo")
    switched = [r["is_switched_outputs"] for r in rows]
    assert switched == [_switched(i) for i in instructions]
    assert any(switched) and not all(switched)
    for r, conv, s in zip(rows, judge.seen, switched):
        assert [m["role"] for m in conv] == ["system", "user"]  # the ChatML blocks as messages
        assert r["output_1"].startswith("base") and r["output_2"].startswith("model")  # un-swapped outputs
        shown_first = conv[1]["content"].split('"model_identifier": "m",')[1]
        assert (r["output_2"] if s else r["output_1"]) in shown_first.split('"model_identifier"')[0]
        if r["instruction"].startswith("UNPARSABLE"):
            assert r["preference"] is None
        else:  # shown order: 2 - P(m)/(P(m)+P(M)) = 1.25; a switched row is un-swapped to 3 - 1.25
            assert r["preference"] == pytest.approx(1.75 if s else 1.25)
    summ = alpaca_summary(rows, ann, n_boot=200)
    assert summ["n"] == 24 and summ["n_failed"] == 1
    y = np.array([r["preference"] - 1 for r in rows if r["preference"] is not None])
    assert summ["win_rate"] == pytest.approx(100 * y.mean())
    lo, hi = summ["win_rate_ci"]
    assert lo <= summ["win_rate"] <= hi
    assert summ["n_wins"] == int((y > 0.5).sum()) and summ["n_wins_base"] == int((y < 0.5).sum())


def test_content_preference_survives_any_order() -> None:
    ann = load_annotator("weighted_alpaca_eval_gpt4_turbo")
    instructions = [f"Question {k}?" for k in range(10)]
    model = ["GOOD answer"] * 10
    base = ["weak answer"] * 10
    judge = ScriptedJudge(lambda first, second: (0.9, 0.1) if "GOOD" in first else (0.1, 0.9))
    rows = annotate(judge, ann, instructions, model, base, "mine", "base")
    assert [r["preference"] for r in rows] == pytest.approx([1.9] * 10)
    clf = load_annotator("alpaca_eval_clf_gpt4_turbo")  # the binarised variant of the same prompt
    binary = annotate(judge, clf, instructions, model, base, "mine", "base")
    assert [r["preference"] for r in binary] == [2.0] * 10


def test_identical_outputs_are_a_draw_without_asking_the_judge() -> None:
    ann = load_annotator("weighted_alpaca_eval_gpt4_turbo")
    judge = ScriptedJudge(lambda first, second: (0.9, 0.1))
    rows = annotate(judge, ann, ["Same?", "Different?"], ["same", "mine"], ["same", "theirs"], "mine", "base")
    assert rows[0]["preference"] == 1.5 and rows[0]["raw_completion"] is None
    assert len(judge.seen) == 1 and "Different?" in judge.seen[0][1]["content"]
    summ = alpaca_summary(rows, ann, n_boot=20)
    assert summ["n"] == 2 and summ["n_draws"] == 1


def _df_gamed(path: Path, difficulty: np.ndarray, rng: np.random.Generator) -> Path:
    """A table shaped like AlpacaEval's df_gamed.csv: the first rows give each index's instruction_difficulty
    (in index order), then two length-gamed baselines' annotations."""
    import pandas as pd

    rows = []
    for model, shift in (("gpt4_1106_preview_verbose", 0.8), ("gpt4_1106_preview_concise", -0.8)):
        for i, d in enumerate(difficulty):
            rows.append(
                {
                    "model": model,
                    "index": i,
                    "instruction_difficulty": d,
                    "preference": float(np.clip(0.5 + 0.3 * np.tanh(shift) - 0.2 * np.tanh(d), 0.01, 0.99)),
                    "std_delta_len": shift + 0.2 * rng.normal(),
                    "not_gamed_baseline": False,
                }
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _setup_lc(tmp_path: Path, n_set: int = 60, n_eval: int = 40):
    rng = np.random.default_rng(3)
    all_instr = [f"AlpacaEval instruction number {k}: explain topic {k}." for k in range(n_set)]
    set_file = tmp_path / "alpaca_eval.json"
    set_file.write_text(json.dumps([{"instruction": i, "dataset": "helpful_base"} for i in all_instr]))
    difficulty = rng.normal(size=n_set)
    table = _df_gamed(tmp_path / "df_gamed.csv", difficulty, rng)
    picked = sorted(rng.choice(n_set, size=n_eval, replace=False).tolist(), key=lambda _: rng.random())
    instructions = [all_instr[k] for k in picked]
    model = ["m" * int(rng.integers(20, 400)) for _ in picked]
    base = ["b" * int(rng.integers(20, 200)) for _ in picked]
    hard = {all_instr[k]: difficulty[k] for k in picked}

    # the judge prefers longer outputs and is harsher on difficult instructions
    def score(first: str, second: str) -> tuple[float, float]:
        p_first = 1 / (1 + math.exp(-(len(first) - len(second)) / 150))
        return 0.9 * p_first, 0.9 * (1 - p_first)

    ann = load_annotator("weighted_alpaca_eval_gpt4_turbo")
    rows = annotate(ScriptedJudge(score), ann, instructions, model, base, "mine", "gpt4_1106_preview")
    for r in rows:  # shift by difficulty so the difficulty term has something to explain
        r["preference"] = float(np.clip(r["preference"] - 0.15 * np.tanh(hard[r["instruction"]]), 1.0, 2.0))
    return ann, rows, set_file, table, picked


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lc_win_rate_equals_the_packages_own_function(tmp_path: Path, monkeypatch) -> None:
    import pandas as pd
    import sklearn

    ann, rows, set_file, table, picked = _setup_lc(tmp_path)
    calls: list[str] = []
    local_only: list[object] = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append(filename)
        local_only.append(kwargs.get("local_files_only"))
        assert filename == "df_gamed.csv" and repo_id == "tatsu-lab/alpaca_eval"
        return str(table)

    monkeypatch.setattr(glm_winrate, "hf_hub_download", fake_download)
    index = read_alpaca_eval_set(set_file)
    assert [index[r["instruction"]] for r in rows] == picked
    summ = alpaca_summary(rows, ann, index, n_boot=100, lc_boot=4, seed=0)
    assert summ["lc_method"] == "alpaca_eval" and "difficulty" in summ["lc_note"]
    assert calls and set(calls) == {"df_gamed.csv"}
    assert set(local_only) == {True}  # evarl lets the package read the local cache only, never download

    # the package's own function on the same annotations, built here from the rows (AlpacaEval's format: the
    # frame's index is the instruction's row in alpaca_eval.json; output_1 = baseline, output_2 = model)
    frame = pd.DataFrame(
        {
            "instruction": [r["instruction"] for r in rows],
            "output_1": [r["output_1"] for r in rows],
            "output_2": [r["output_2"] for r in rows],
            "generator_1": "gpt4_1106_preview",
            "generator_2": "mine",
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
            "preference": [r["preference"] for r in rows],
        },
        index=picked,
    )
    with sklearn.config_context():  # the package switches sklearn's metadata routing on globally
        expected = glm_winrate.get_length_controlled_winrate(frame, save_weights_dir=None)
    assert summ["lc_win_rate"] == pytest.approx(float(expected["length_controlled_winrate"]), abs=1e-9)
    assert summ["lc_standard_error"] == pytest.approx(float(expected["lc_standard_error"]), abs=1e-9)
    assert summ["win_rate"] == pytest.approx(float(expected["win_rate"]), abs=1e-9)
    assert summ["lc_n"] == 40 and summ["lc_bootstrap_samples"] == 4
    lo, hi = summ["lc_win_rate_ci"]
    assert lo <= hi

    # the difficulty term is used: the same annotations under other difficulties give another LC win rate
    _df_gamed(table, -3 * np.random.default_rng(9).normal(size=60), np.random.default_rng(1))
    other = alpaca_summary(rows, ann, index, n_boot=10, lc_boot=0, seed=0)
    with sklearn.config_context():
        again = glm_winrate.get_length_controlled_winrate(frame, save_weights_dir=None)
    assert other["lc_win_rate"] == pytest.approx(float(again["length_controlled_winrate"]), abs=1e-9)
    assert abs(other["lc_win_rate"] - summ["lc_win_rate"]) > 0.1


def test_other_prompts_use_evarls_glm_and_say_why(tmp_path: Path, monkeypatch) -> None:
    ann, rows, set_file, table, _ = _setup_lc(tmp_path, n_eval=20)
    y = [r["preference"] - 1 for r in rows]
    dlen = [len(r["output_2"]) - len(r["output_1"]) for r in rows]
    own = length_controlled_win_rate(y, dlen)

    summ = alpaca_summary(rows, ann, None, n_boot=50)  # no --alpaca-eval-set
    assert summ["lc_method"] == "evarl" and "--alpaca-eval-set" in summ["lc_note"]
    assert summ["lc_win_rate"] == pytest.approx(own)
    lo, hi = summ["lc_win_rate_ci"]
    assert lo <= hi and summ["lc_n"] == 20

    index = read_alpaca_eval_set(set_file)
    rows[0] = {**rows[0], "instruction": "Not an AlpacaEval instruction"}
    summ = alpaca_summary(rows, ann, index, n_boot=20)
    assert (
        summ["lc_method"] == "evarl"
        and "1 of 20 instructions are not in --alpaca-eval-set" in summ["lc_note"]
    )

    def offline(**kwargs: Any) -> str:
        raise OSError("offline: cannot reach the hub")

    monkeypatch.setattr(glm_winrate, "hf_hub_download", offline)
    rows[0] = {**rows[0], "instruction": next(iter(index))}
    summ = alpaca_summary(rows, ann, index, n_boot=20)
    assert summ["lc_method"] == "evarl" and "df_gamed.csv" in summ["lc_note"] and "offline" in summ["lc_note"]

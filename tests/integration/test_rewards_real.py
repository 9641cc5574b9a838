"""Reward sources on real models: the judge prompt and parser on SmolLM2's own output, the pairwise
preference model's real forward pass on SmolLM2, and a real sequence-classification RM (tiny Llama head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evarl.config import RewardSourceConfig
from evarl.rewards.judge import JudgeReward, parse_score
from evarl.types import Prompt

P1 = Prompt(id="a", messages=[{"role": "user", "content": "What is the capital of France?"}])
P2 = Prompt(id="b", messages=[{"role": "user", "content": "Give one tip for sleeping better."}])


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    from evarl.generation.hf import HFGenerator

    return HFGenerator.from_path(str(smollm2_dir), batch_size=8)


@pytest.mark.slow
def test_self_reward_judge_on_smollm2(smollm2):
    cfg = RewardSourceConfig(
        name="judge", model="policy", samples=2, options={"max_new_tokens": 64, "seed": 1}
    )
    judge = JudgeReward.from_config(cfg, policy=smollm2)
    res = judge.score([P1, P2], ["The capital of France is Paris.", "Eat a large meal right before bed."])
    assert len(res) == 2
    for r in res:
        raw, parsed = r.info["raw"], r.info["parsed"]
        assert len(raw) == 2 and all(isinstance(t, str) and t for t in raw)
        assert parsed == [parse_score(t) for t in raw]  # every real output went through the parser
        valid = [v for v in parsed if v is not None]
        assert r.info["parse_failures"] == 2 - len(valid)
        if valid:
            assert not r.failed and r.score == pytest.approx(sum(valid) / len(valid)) and 0 <= r.score <= 5
        else:
            assert r.failed and "did not parse" in r.info["error"]
    assert judge.counts["samples"] == 4 and judge.role == "self"


@pytest.mark.slow
def test_pairwise_preference_on_smollm2(smollm2_dir: Path):
    from evarl.rewards.pairwise import PairwiseReward

    pm = PairwiseReward.from_path(smollm2_dir, batch_size=8, max_length=512)
    responses = ["Paris.", "The capital of France is Paris.", "I like turtles."]
    # a batch of two prompts, interleaved: grouped by prompt id into a 3x3 and a 2x2 win matrix
    batch_p = [P1, P2, P1, P2, P1]
    batch_r = [responses[0], "Keep a regular schedule.", responses[1], "Drink coffee at night.", responses[2]]
    out = pm.score(batch_p, batch_r)
    m = np.array([out[0].info["wins"], out[2].info["wins"], out[4].info["wins"]])
    assert m.shape == (3, 3)
    off = m[~np.eye(3, dtype=bool)]
    assert np.all((off > 0) & (off < 1)) and np.allclose(m + m.T, 1.0) and np.allclose(np.diag(m), 0.5)
    assert out[0].score == pytest.approx((m[0, 1] + m[0, 2]) / 2, abs=1e-6)
    assert out[4].score == pytest.approx((m[2, 0] + m[2, 1]) / 2, abs=1e-6)
    assert out[1].score + out[3].score == pytest.approx(1.0, abs=1e-6)
    # win_matrix is the same computation for one prompt
    m2 = pm.win_matrix(P2, ["Keep a regular schedule.", "Drink coffee at night."])
    assert m2[0, 1] == pytest.approx(out[1].score, abs=1e-5)
    # an input that does not fit is cut and flagged, a context that cannot fit fails
    small = PairwiseReward(pm.model, pm.tokenizer, max_length=80)
    long = "word " * 200
    probs, trunc = small.preference([P1], [long], ["Paris."])
    assert trunc[0] and 0 < probs[0] < 1
    huge = Prompt(id="h", messages=[{"role": "user", "content": "context " * 300}])
    res = small.score([huge, huge], ["a", "b"])
    assert all(r.failed for r in res)


def test_classifier_rm_own_tokenizer_batching_and_truncation(tmp_path: Path, tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from evarl.rewards.classifier import ClassifierReward, rm_text

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm_dir = tmp_path / "rm"
    rm.save_pretrained(rm_dir, safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(rm_dir)
    src = ClassifierReward.from_config(
        RewardSourceConfig(name="classifier", model=str(rm_dir), options={"batch_size": 3})
    )
    prompts = [P1, P2, P1, P2]
    responses = ["Paris.", "Sleep " * 40, "It is Paris, the city of light.", "Go to bed early."]
    batched = [r.score for r in src.score(prompts, responses)]
    single = ClassifierReward(src.model, src.tokenizer, batch_size=1)
    one_by_one = [single.score([p], [r])[0].score for p, r in zip(prompts, responses)]
    assert np.allclose(batched, one_by_one, atol=1e-4)  # padding does not change a score
    assert len(set(np.round(batched, 6))) == 4
    text, special = rm_text(src.tokenizer, P1.messages, "Paris.")
    assert "<|im_start|>assistant\nParis." in text and special is False  # the RM's own chat template
    short = ClassifierReward(src.model, src.tokenizer, max_length=16)
    res = short.score(prompts[:2], responses[:2])
    assert all(r.info.get("truncated") for r in res)


def test_teacher_judge_from_a_local_model_dir(tiny_model_dir: Path):
    """`judge` with `model: <dir>` loads that model as the teacher (a tiny random Llama: its output does not
    parse, so every item is failed and counted, never scored 0)."""
    from evarl.generation.hf import HFGenerator

    cfg = RewardSourceConfig(
        name="judge", model=str(tiny_model_dir), options={"max_new_tokens": 6, "batch_size": 2}
    )
    judge = JudgeReward.from_config(cfg)
    assert judge.role == "teacher" and isinstance(judge.generator, HFGenerator)
    res = judge.score([P1, P2], ["Paris.", "Sleep."])
    for r in res:
        assert r.failed == (parse_score(r.info["raw"][0]) is None)
    assert judge.counts["items"] == 2 and judge.counts["failed_items"] == sum(r.failed for r in res)

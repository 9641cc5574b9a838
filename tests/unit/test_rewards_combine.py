"""build_reward: weighted sum, length penalty, failure protocol, factories and option checking."""

from __future__ import annotations

import math

import pytest

from evarl.config import RewardConfig, RewardSourceConfig
from evarl.registry import REWARDS
from evarl.rewards import CombinedReward, build_reward, summarize
from evarl.rewards.combine import RewardBuildError, build_source, response_length
from evarl.rewards.length import LengthReward
from evarl.types import Prompt, RewardResult


def _p(i: str = "p0") -> Prompt:
    return Prompt(id=i, messages=[{"role": "user", "content": "say hi"}])


class FixedSource:
    """Scores from a dict response -> score; responses missing from it fail."""

    name = "fixed"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def score(self, prompts, responses):
        return [
            RewardResult(self.table[r]) if r in self.table else RewardResult(math.nan, True, {"error": "x"})
            for r in responses
        ]


class WordTok:
    """A whitespace 'tokenizer' with the HF call signature used for token lengths."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_weighted_sum_and_components():
    a = FixedSource({"x": 1.0, "yy": 2.0})
    b = FixedSource({"x": 10.0, "yy": -4.0})
    comb = CombinedReward([("a", 0.5, a), ("b", 2.0, b)])
    out = comb.score([_p(), _p()], ["x", "yy"])
    assert out[0].score == pytest.approx(0.5 * 1 + 2 * 10)
    assert out[1].score == pytest.approx(0.5 * 2 + 2 * -4)
    assert out[0].info["components"] == {"a": 1.0, "b": 10.0}
    assert not out[0].failed


def test_failed_in_any_weighted_source_fails_item_and_is_counted():
    a = FixedSource({"x": 1.0, "yy": 2.0})
    b = FixedSource({"x": 3.0})  # cannot score "yy"
    comb = CombinedReward([("a", 1.0, a), ("b", 1.0, b)])
    out = comb.score([_p(), _p()], ["x", "yy"])
    assert not out[0].failed and out[0].score == 4.0
    assert out[1].failed and math.isnan(out[1].score)  # never silently 0
    assert out[1].info["failed_sources"] == ["b"]
    assert comb.counts == {"a": {"scored": 2, "failed": 0}, "b": {"scored": 1, "failed": 1}}
    s = summarize(out)
    assert s["n_failed"] == 1 and s["n_scored"] == 1 and s["mean"] == 4.0


def test_zero_weight_source_is_monitor_only():
    a = FixedSource({"x": 1.0, "yy": 2.0})
    b = FixedSource({"x": 3.0})
    out = CombinedReward([("a", 1.0, a), ("b", 0.0, b)]).score([_p(), _p()], ["x", "yy"])
    assert not out[1].failed and out[1].score == 2.0
    assert out[0].info["components"]["b"] == 3.0 and out[0].score == 1.0


def test_length_penalty_chars_and_tokens():
    a = FixedSource({"ab cd": 1.0})
    out = CombinedReward([("a", 1.0, a)], length_penalty=0.1).score([_p()], ["ab cd"])
    assert out[0].score == pytest.approx(1.0 - 0.1 * 5)
    assert out[0].info["components"]["length_penalty"] == pytest.approx(-0.5)
    out = CombinedReward([("a", 1.0, a)], 0.1, "tokens", WordTok()).score([_p()], ["ab cd"])
    assert out[0].score == pytest.approx(1.0 - 0.1 * 2)
    with pytest.raises(RewardBuildError, match="tokenizer"):
        CombinedReward([("a", 1.0, a)], 0.1, "tokens", None)
    with pytest.raises(RewardBuildError, match="length unit"):
        CombinedReward([("a", 1.0, a)], 0.1, "words", None)


def test_length_source():
    assert response_length(["abc", ""], "chars") == [3, 0]
    src = build_source(RewardSourceConfig(name="length", mode="chars"))
    assert isinstance(src, LengthReward)
    assert [r.score for r in src.score([_p(), _p()], ["abc", "a"])] == [-3.0, -1.0]
    tok_src = build_source(RewardSourceConfig(name="length", mode="tokens"), policy_tokenizer=WordTok())
    assert tok_src.score([_p()], ["one two three"])[0].score == -3.0
    with pytest.raises(RewardBuildError, match="chars, tokens"):
        build_source(RewardSourceConfig(name="length", mode="loose"))
    with pytest.raises(RewardBuildError, match="unknown option"):
        build_source(RewardSourceConfig(name="length", mode="chars", options={"unit": "x"}))


def test_build_reward_labels_duplicates_and_plain_callables():
    name = "test_plain_fn_reward"
    if name not in REWARDS:

        @REWARDS.register(name)
        def plain(prompts, responses):
            return [None if r == "bad" else float(len(r)) for r in responses]

    cfg = RewardConfig(
        sources=[
            RewardSourceConfig(name=name, weight=1.0),
            RewardSourceConfig(name="length", weight=0.5, mode="chars"),
            RewardSourceConfig(name="length", weight=0.5, mode="chars"),
        ]
    )
    comb = build_reward(cfg)
    out = comb.score([_p(), _p()], ["abcd", "bad"])
    assert out[0].info["components"] == {name: 4.0, "length": -4.0, "length_2": -4.0}
    assert out[0].score == pytest.approx(0.0)
    assert out[1].failed


def test_build_reward_errors_name_the_source():
    with pytest.raises(RewardBuildError, match=r"reward.sources\[0\] \(judge\)"):
        build_reward(RewardConfig(sources=[RewardSourceConfig(name="judge", model="policy")]))
    with pytest.raises(KeyError, match="unknown reward source"):
        build_reward(RewardConfig(sources=[RewardSourceConfig(name="nope")]))
    with pytest.raises(RewardBuildError, match="classifier"):
        build_reward(RewardConfig(sources=[RewardSourceConfig(name="classifier")]))


def test_all_source_names_registered():
    for n in ("classifier", "pairwise", "judge", "length"):
        assert n in REWARDS


def test_build_reward_with_the_verifier_and_a_length_penalty():
    from evarl.types import Constraint

    p = Prompt(
        id="v",
        messages=[{"role": "user", "content": "Say hi without commas."}],
        constraints=[Constraint("punctuation:no_comma", {})],
    )
    cfg = RewardConfig(sources=[RewardSourceConfig(name="verifier", mode="strict")], length_penalty=0.01)
    out = build_reward(cfg).score([p, p, _p()], ["hi there", "hi, there", "x"])
    assert out[0].score == pytest.approx(1.0 - 0.01 * 8)
    assert out[1].score == pytest.approx(0.0 - 0.01 * 9)
    assert out[2].failed  # no constraints: the verifier cannot score it, so neither can the sum
    with pytest.raises(RewardBuildError, match="unknown option"):
        build_reward(RewardConfig(sources=[RewardSourceConfig(name="verifier", options={"x": 1})]))


def test_samples_is_rejected_outside_the_judge():
    with pytest.raises(RewardBuildError, match="samples"):
        build_source(RewardSourceConfig(name="length", mode="chars", samples=3))

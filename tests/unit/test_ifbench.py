"""IFBench checkers (if-verifiable) offline: the import never downloads, the stop words and the verb tagger
work without NLTK's data packages, results agree with if-verifiable's own evaluator, and the pools, held-out
set and per-benchmark numbers are what they say."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from evarl.eval.ifeval import InstructionCheck, benchmark_label, by_benchmark, evaluate_prompts
from evarl.rewards.verifier import VerifierReward
from evarl.tasks import checkers, default
from evarl.tasks import constraints as tc
from evarl.types import Constraint, Prompt

NO_NET = """
import socket, nltk
def refuse(*a, **k):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
nltk.download = refuse
from evarl.tasks import checkers
reg = checkers.registries()
print(len(reg["ifeval"]), len(reg["ifbench"]), sorted(set(checkers.IFBENCH_MISSING_AT_IMPORT)))
r = checkers.check_response("p", "Write it down. Then rest.", ["ratio:stop_words", "words:start_verb"],
                            [{"percentage": 60}, {}])
print([(x.strict, x.loose, x.error) for x in r])
"""


def test_ifbench_loads_without_network_or_downloads(tmp_path: Path) -> None:
    env = {"EVARL_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", NO_NET], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    counts, results = out.stdout.strip().splitlines()[-2:]
    n_ifeval, n_ifbench, missing = counts.split(" ", 2)
    assert (int(n_ifeval), int(n_ifbench)) == (25, 58)
    # what IFBench asked for at import: the data NLTK would have downloaded (nothing was)
    assert "averaged_perceptron_tagger_eng" in missing and "stopwords" not in missing
    assert results == "[(True, True, None), (True, True, None)]"
    assert (tmp_path / "cache" / "nltk_data" / "corpora" / "stopwords" / "english").exists()


def test_registries_are_disjoint_and_benchmark_of_names_them() -> None:
    regs = checkers.registries()
    assert not set(regs["ifeval"]) & set(regs["ifbench"])
    assert checkers.benchmark_of("punctuation:no_comma") == "ifeval"
    assert checkers.benchmark_of("ratio:stop_words") == "ifbench"
    with pytest.raises(KeyError, match="no:such"):
        checkers.benchmark_of("no:such")


def test_stop_words_are_nltks_english_list() -> None:
    import nltk

    checkers.registry()
    words = nltk.corpus.stopwords.words("english")
    assert len(words) == 198 and len(set(words)) == 198
    assert {"the", "and", "mightn't", "we've", "i'll"} <= set(words) and "cat" not in words
    # "the cat and the dog": 3 of 5 words are stop words = 60%
    res = checkers.check_response(
        "p", "the cat and the dog", ["ratio:stop_words"] * 2, [{"percentage": 59}, {"percentage": 60}]
    )
    assert [(r.strict, r.loose) for r in res] == [(False, False), (True, True)]


def test_start_verb_tagger() -> None:
    verbs = [
        "Write a short poem about the sea.",
        "Explain why the sky is blue.",
        "Imagine a world without rain.",
    ]
    others = ["The sea is calm.", "I think so.", "Sure! Here is a poem.", "Blue skies are nice."]
    for text, want in [(t, True) for t in verbs] + [(t, False) for t in others]:
        (r,) = checkers.check_response("p", text, ["words:start_verb"], [{}])
        assert r.strict is want, (text, checkers.pos_tagger_name())
    assert checkers.pos_tagger_name() in ("pattern", "nltk-perceptron")
    assert checkers.pos_tag([]) == []
    assert [t for _, t in checkers.pos_tag(["Describe", "your", "day"])][:2] == ["VB", "PRP$"]


# (prompt, ids, kwargs, responses) on IFBench checkers that need no tagger
AGREEMENT = [
    (
        "Describe rain.",
        ["count:word_count_range", "count:conjunctions", "words:repeats"],
        [{"min_words": 5, "max_words": 12}, {"small_n": 2}, {"small_n": 1}],
        [
            "Rain falls and drips, but soon it stops.",
            "rain rain rain",
            "**Rain**\nIt falls and stops or not.",
        ],
    ),
    (
        "List fruits.",
        ["format:list", "count:numbers", "format:title_case"],
        [{"sep": "&&"}, {"N": 2}, {}],
        ["Apples && Pears && 2 Plums And 3 Figs", "apples, pears", "Sure:\nApples && Pears && 1 And 2"],
    ),
    (
        "Say something.",
        ["ratio:stop_words", "format:emoji", "words:no_consecutive", "sentence:keyword"],
        [{"percentage": 40}, {}, {}, {"word": "value", "N": 1}],
        ["Great value 🎉. Lovely day 🌞.", "The value of the thing is the value.", "Value seen 😀"],
    ),
]


def test_agrees_with_if_verifiable_ifbench_evaluator() -> None:
    from if_verifiable.api import evaluate_output_for_sample
    from if_verifiable.types import IFBenchSample

    checkers.registry()  # loads ifbench offline first; the evaluator then reuses that import
    for k, (prompt, ids, kwargs, responses) in enumerate(AGREEMENT):
        kwargs = kwargs + [{}] * (len(ids) - len(kwargs))
        sample = IFBenchSample(key=k, prompt=prompt, instruction_id_list=ids, kwargs=kwargs)
        for resp in responses:
            mine = checkers.check_response(prompt, resp, ids, kwargs)
            results, _ = evaluate_output_for_sample("ifbench", sample, resp)
            assert [(c.instruction_id, c.strict, c.loose) for c in mine] == [
                (r.instruction_id, r.strict_pass, r.loose_pass) for r in results
            ], resp
    # both outcomes occur, so the agreement is not vacuous
    flat = [
        c.strict
        for prompt, ids, kw, rs in AGREEMENT
        for r in rs
        for c in checkers.check_response(prompt, r, ids, kw + [{}] * (len(ids) - len(kw)))
    ]
    assert any(flat) and not all(flat)


def test_a_checker_that_raises_fails_its_instruction_and_keeps_the_error() -> None:
    # IFBench's quote checker indexes past the end of a response without words
    (r,) = checkers.check_response("p", "...", ["format:quote_unquote"], [{}])
    assert (r.strict, r.loose) == (False, False) and r.error and r.error.startswith("IndexError")
    p = Prompt("x", [{"role": "user", "content": "q"}], "q", [Constraint("format:quote_unquote")])
    (res,) = VerifierReward("loose").score([p], ["..."])
    assert not res.failed and res.score == 0.0 and "format:quote_unquote" in res.info["errors"]


def test_every_ifbench_pool_entry_describes_itself_and_round_trips() -> None:
    rng = random.Random(0)
    for cid, sampler in tc.IFBENCH_SAMPLERS.items():
        assert checkers.benchmark_of(cid) == "ifbench"
        for _ in range(3):
            kw = sampler(rng)
            c = Constraint(cid, kw)
            assert len(tc.describe(c)) > 10
            args = checkers.make_checker(cid, kw).get_instruction_args()
            assert (args or {}) == {k: v for k, v in (args or {}).items() if k in kw} and all(
                (args or {}).get(k) == v for k, v in kw.items()
            ), cid


def test_pools_sample_only_their_checkers_and_respect_conflicts() -> None:
    for pool, want in [("ifeval", {"ifeval"}), ("ifbench", {"ifbench"}), ("all", {"ifeval", "ifbench"})]:
        seen = set()
        for s in range(60):
            cs = tc.sample_constraints(random.Random(s), 3, pool)
            ids = [c.id for c in cs]
            assert len(set(ids)) == len(ids)
            for i, c in enumerate(cs):
                assert tc.compatible(c.id, cs[:i] + cs[i + 1 :]), ids
            seen |= {checkers.benchmark_of(i) for i in ids}
        assert seen == want, pool
    assert not tc.compatible("format:newline", [Constraint("format:list", {"sep": "&&"})])
    assert not tc.compatible("format:title_case", [Constraint("change_case:english_lowercase")])
    with pytest.raises(ValueError, match="task.checkers"):
        tc.pool_samplers("ifbench2")


def test_shipped_ifbench_heldout_is_regenerable_and_ifbench_only(tmp_path: Path) -> None:
    out = tmp_path / "h.jsonl"
    default.write_heldout_file(out, "ifbench")
    shipped = Path(default._data_path("heldout_ifbench.jsonl"))
    assert out.read_text() == shipped.read_text()
    rows = [json.loads(x) for x in shipped.read_text().splitlines()]
    assert len(rows) == len(default.heldout_rows())
    assert {checkers.benchmark_of(i) for r in rows for i in r["instruction_id_list"]} == {"ifbench"}
    both = default.heldout_prompts(4, "all")
    assert [checkers.benchmark_of(p.constraints[0].id) for p in both] == ["ifeval", "ifbench"] * 2
    assert both[0].task == both[1].task
    train = default.train_prompts(6, checkers="ifbench")
    assert {checkers.benchmark_of(c.id) for p in train for c in p.constraints} == {"ifbench"}
    assert all(p.text == tc.build_prompt_text(p.task, p.constraints) for p in train)


def test_per_benchmark_numbers_hand_computed() -> None:
    c = InstructionCheck
    results = [
        [c("punctuation:no_comma", True, True), c("ratio:stop_words", False, True)],
        [c("format:emoji", True, True)],
        [c("change_case:english_lowercase", False, False)],
    ]
    assert benchmark_label(results) == "IFEval+IFBench"
    assert benchmark_label([[c("format:emoji", True, True)]]) == "IFBench"
    assert benchmark_label([]) == "IFEval"
    b = by_benchmark(results)
    assert b["ifeval"]["n_instructions"] == 2 and b["ifeval"]["prompt_strict"] == pytest.approx(1 / 2)
    assert b["ifbench"]["n_prompts"] == 2 and b["ifbench"]["prompt_strict"] == pytest.approx(1 / 2)
    assert b["ifbench"]["prompt_loose"] == 1.0 and b["ifbench"]["inst_strict"] == pytest.approx(1 / 2)

    prompts = default.heldout_prompts(2, "ifbench")
    m = evaluate_prompts(prompts, ["Write it down.", ""])
    assert m["benchmark"] == "IFBench" and set(m["by_benchmark"]) == {"ifbench"}


def test_config_rejects_unknown_pool() -> None:
    from evarl.config import RunConfig, TaskConfig, validate_config

    errors = validate_config(RunConfig(task=TaskConfig(checkers="ifbnech")))
    assert any("task.checkers" in e for e in errors)
    assert not any("task.checkers" in e for e in validate_config(RunConfig(task=TaskConfig(checkers="all"))))

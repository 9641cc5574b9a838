"""IFEval's four accuracies: hand-computed cases, and agreement with if_verifiable's own evaluator."""

from __future__ import annotations

import pytest

from evarl.eval.ifeval import (
    InstructionCheck,
    check_prompt,
    check_response,
    evaluate_prompts,
    ifeval_metrics,
    per_instruction_accuracy,
)
from evarl.types import Constraint, Prompt

NO_COMMA = "punctuation:no_comma"
LOWER = "change_case:english_lowercase"


def test_ifeval_metrics_hand_computed():
    c = InstructionCheck
    results = [
        [c(NO_COMMA, True, True), c(LOWER, True, True)],
        [c(NO_COMMA, False, False)],
        [c(LOWER, False, True)],
        [],  # no instructions: not counted
    ]
    m = ifeval_metrics(results)
    assert m["n_prompts"] == 3 and m["n_instructions"] == 4
    assert m["prompt_strict"] == pytest.approx(1 / 3)
    assert m["prompt_loose"] == pytest.approx(2 / 3)
    assert m["inst_strict"] == pytest.approx(2 / 4)
    assert m["inst_loose"] == pytest.approx(3 / 4)
    by = per_instruction_accuracy(results)
    assert by[NO_COMMA] == {"n": 2, "strict": 0.5, "loose": 0.5}
    assert by[LOWER] == {"n": 2, "strict": 0.5, "loose": 1.0}
    assert ifeval_metrics([[]])["prompt_strict"] is None


def test_checks_on_real_checkers_strict_vs_loose():
    prompts = [
        Prompt(
            "a", [{"role": "user", "content": "q"}], constraints=[Constraint(NO_COMMA), Constraint(LOWER)]
        ),
        Prompt("b", [{"role": "user", "content": "q"}], constraints=[Constraint(NO_COMMA)]),
        Prompt("c", [{"role": "user", "content": "q"}], constraints=[Constraint(LOWER)]),
        Prompt("d", [{"role": "user", "content": "q"}], constraints=[Constraint(NO_COMMA)]),
    ]
    # c: strict fails on the capitalised first line, loose passes once that line is dropped
    responses = ["hello world", "Hello, world", "**Title**\nhello world", ""]
    m = evaluate_prompts(prompts, responses)
    assert m["prompt_strict"] == pytest.approx(1 / 4)
    assert m["prompt_loose"] == pytest.approx(2 / 4)
    assert m["inst_strict"] == pytest.approx(2 / 5)  # the empty response fails its instruction
    assert m["inst_loose"] == pytest.approx(3 / 5)
    assert check_prompt(prompts[2], responses[2]) == [InstructionCheck(LOWER, False, True)]


def test_unknown_instruction_and_length_mismatch_are_errors():
    with pytest.raises(KeyError, match="no_such:thing"):
        check_response("p", "r", ["no_such:thing"], [{}])
    with pytest.raises(ValueError, match="kwargs"):
        check_response("p", "r", [NO_COMMA], [])


# IFEval-style items covering keyword, length (sentence-based, needs punkt), format, case and content checkers
AGREEMENT_ITEMS = [
    (
        "Write about the sea. Mention the words ocean and blue.",
        ["keywords:existence", "length_constraints:number_sentences"],
        [{"keywords": ["ocean", "blue"]}, {"num_sentences": 3, "relation": "at least"}],
        [
            "The ocean is blue. It is wide. Fish live there.",
            "The sea is big. It has waves.",
            "**Ocean facts**\nThe ocean is blue and deep. Whales swim. Waves crash.",
        ],
    ),
    (
        "List three fruits in lowercase with a title.",
        ["change_case:english_lowercase", "detectable_format:title", "detectable_format:number_bullet_lists"],
        [{}, {}, {"num_bullets": 3}],
        [
            "<<three fruits>>\n* the apple is a sweet fruit\n* the pear is soft and juicy\n* the plum is small",
            "<<Fruits>>\n* Apple is red\n* the pear is green",
            "Here you go:\n<<three fruits>>\n* the apple is a sweet fruit\n* the pear is soft and juicy\n"
            "* the plum is small and purple\nEnjoy them all!",
        ],
    ),
    (
        "Describe rain in under 20 words and end with a postscript, no commas.",
        ["length_constraints:number_words", "detectable_content:postscript", "punctuation:no_comma"],
        [{"num_words": 20, "relation": "less than"}, {"postscript_marker": "P.S."}, {}],
        [
            "Rain falls softly on the roof.\nP.S. bring an umbrella",
            "Rain, rain, go away. It falls on everything, everywhere, all day long, and I dislike it a lot.",
            "",
        ],
    ),
]


def test_agrees_with_if_verifiable_evaluator():
    from if_verifiable.api import evaluate_output_for_sample
    from if_verifiable.types import IFEvalSample

    ours, theirs_inst, theirs_prompt = [], [], []
    for k, (prompt, ids, kwargs, responses) in enumerate(AGREEMENT_ITEMS):
        sample = IFEvalSample(key=k, prompt=prompt, instruction_id_list=ids, kwargs=kwargs)
        for resp in responses:
            mine = check_response(prompt, resp, ids, kwargs)
            results, scores = evaluate_output_for_sample("ifeval", sample, resp)
            ours.append(mine)
            if not resp.strip():
                # if-verifiable scores an empty response 0 with no instruction results; IFEval fails them all
                assert results == [] and scores.binary_strict == 0.0
                assert all(not c.strict and not c.loose for c in mine)
                theirs_prompt.append((0.0, 0.0))
                theirs_inst.append([(False, False)] * len(ids))
                continue
            assert [(c.instruction_id, c.strict, c.loose) for c in mine] == [
                (r.instruction_id, r.strict_pass, r.loose_pass) for r in results
            ]
            assert float(all(c.strict for c in mine)) == scores.binary_strict
            assert float(all(c.loose for c in mine)) == scores.binary_loose
            assert sum(c.strict for c in mine) / len(mine) == pytest.approx(scores.partial_strict)
            assert sum(c.loose for c in mine) / len(mine) == pytest.approx(scores.partial_loose)
            theirs_prompt.append((scores.binary_strict, scores.binary_loose))
            theirs_inst.append([(r.strict_pass, r.loose_pass) for r in results])
    m = ifeval_metrics(ours)
    n = len(theirs_prompt)
    total = sum(len(r) for r in theirs_inst)
    assert m["prompt_strict"] == pytest.approx(sum(s for s, _ in theirs_prompt) / n)
    assert m["prompt_loose"] == pytest.approx(sum(lo for _, lo in theirs_prompt) / n)
    assert m["inst_strict"] == pytest.approx(sum(s for r in theirs_inst for s, _ in r) / total)
    assert m["inst_loose"] == pytest.approx(sum(lo for r in theirs_inst for _, lo in r) / total)
    # the items exercise both outcomes, so the agreement is not vacuous
    assert 0 < m["inst_strict"] < m["inst_loose"] < 1


def test_language_checkers_are_deterministic():
    # langdetect samples at random unless seeded; short lowercase text flips between languages unseeded
    text = "apple pear plum"
    first = check_response("p", text, [LOWER], [{}])
    assert all(check_response("p", text, [LOWER], [{}]) == first for _ in range(8))

"""The WizardLM / distilabel EvolInstruct evolver (eva's default): five mutations, chained on the previous output."""

from __future__ import annotations

from collections import Counter

from evarl.creator.evolve import evolve_prompts
from evarl.creator.evolve.wizardlm import BREADTH, IN_DEPTH_MUTATIONS, render_wizardlm
from evarl.registry import EVOLVERS
from tests.unit.test_evolve_unit import FakeCreator, ctx, file_prompts


def test_registered_with_the_five_wizardlm_mutations() -> None:
    ev = EVOLVERS.get("evolinstruct-wizardlm")()
    assert sorted(ev.mutations()) == sorted([*IN_DEPTH_MUTATIONS, BREADTH])


def test_breadth_template_is_the_prompt_creator_and_depth_the_rewriter() -> None:
    breadth = render_wizardlm(BREADTH, "Name three rivers.")
    assert breadth.startswith("I want you act as a Prompt Creator.")
    assert "same domain as the #Given Prompt# but be even more rare" in breadth
    assert breadth.rstrip().endswith("#Given Prompt#:\nName three rivers.\n#Created Prompt#:")
    depth = render_wizardlm("reasoning", "Name three rivers.")
    assert depth.startswith("I want you act as a Prompt Rewriter.")
    assert "multiple-step reasoning" in depth and "Name three rivers." in depth


def test_each_step_evolves_the_previous_output_chain_depth_deep() -> None:
    gen = FakeCreator()
    parents = file_prompts(3)
    kids = evolve_prompts(
        parents, ["evolinstruct-wizardlm"], ctx(gen, num_children=2, chain_depth=3, keep_intermediate=False)
    )
    assert len(kids) == 3 * 2  # one child per chain: only the last step kept
    assert len(gen.calls) == 3  # one batched generate call per chain step
    for k in kids:
        # the fake appends " +<call>" to the text it was given: three steps -> three suffixes on the root text
        assert k.messages[-1]["content"].count(" +") == 3
        assert len(k.meta["chain_methods"]) == 3
        assert set(k.meta["chain_methods"]) <= {*IN_DEPTH_MUTATIONS, BREADTH}


def test_mutations_are_spread_over_all_five() -> None:
    gen = FakeCreator()
    kids = evolve_prompts(
        file_prompts(20), ["evolinstruct-wizardlm"], ctx(gen, num_children=4, chain_depth=1)
    )
    seen = Counter(k.meta["chain_methods"][-1] for k in kids)
    assert set(seen) == {*IN_DEPTH_MUTATIONS, BREADTH}

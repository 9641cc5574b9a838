"""EvolInstruct as WizardLM defined it and distilabel ships it: the eva paper's default evolver.

Xu, Sun, Zheng, Geng, Zhao, Feng, Tao, Jiang (2023), "WizardLM: Empowering large language models to follow
complex instructions", arXiv:2304.12244, §3.1: each evolution step applies one of five mutations to the
previous step's output, picked uniformly —

    in-depth ("Prompt Rewriter", +10-20 words): constraints, deepening, concretizing, reasoning
    in-breadth ("Prompt Creator"): breadth — a brand-new, rarer prompt of the same domain

eva (Ye et al. 2024, "Evolving alignment via asymmetric self-play", arXiv:2411.00062, §4 and appendix F) evolves
with distilabel's EvolInstruct, whose mutation templates are these five. ``creator.chain_depth`` sets the number
of steps of each chain (distilabel's ``num_evolutions``; eva: 4); ``creator.keep_intermediate`` keeps every step
as a child (distilabel's ``store_evolutions``). The in-depth template and its four methods are the ones
``evolcomplexity`` uses (prompts/evolve/evolcomplexity*.txt); the in-breadth template is
prompts/evolve/wizardlm_breadth.txt. ``evolinstruct`` (eva v2's ten appendix-F methods) stays the
default of ``creator.methods``; name ``evolinstruct-wizardlm`` there for the paper's original evolver.
"""

from __future__ import annotations

from evarl.creator.evolve.common import fill, load_mutations
from evarl.creator.evolve.evolinstruct import ChainEvolver
from evarl.io import load_template
from evarl.registry import EVOLVERS

IN_DEPTH_MUTATIONS = ("constraints", "deepening", "concretizing", "reasoning")
BREADTH = "breadth"


def render_wizardlm(mutation: str, text: str) -> str:
    """The WizardLM meta-prompt of ``mutation`` (one of IN_DEPTH_MUTATIONS or "breadth") applied to ``text``."""
    if mutation == BREADTH:
        return fill(load_template("wizardlm_breadth", "evolve"), text)
    methods = load_mutations("evolcomplexity_mutations")
    if mutation not in IN_DEPTH_MUTATIONS or mutation not in methods:
        known = ", ".join((*IN_DEPTH_MUTATIONS, BREADTH))
        raise KeyError(f"unknown WizardLM mutation {mutation!r}; known: {known}")
    return fill(load_template("evolcomplexity", "evolve"), text, methods[mutation])


@EVOLVERS.register("evolinstruct-wizardlm")
class WizardLMEvolInstruct(ChainEvolver):
    """WizardLM / distilabel EvolInstruct: four in-depth rewrites and one in-breadth creation, chained."""

    name = "evolinstruct-wizardlm"

    def mutations(self) -> list[str]:
        return [*IN_DEPTH_MUTATIONS, BREADTH]

    def render(self, mutation: str, text: str) -> str:
        return render_wizardlm(mutation, text)

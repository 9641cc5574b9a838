"""EvolComplexity (Liu et al. 2023b, "What makes good data for alignment"; eva seed 001 appendix H.1).

The same sequential evolution as EvolInstruct but with distilabel's four in-depth "Prompt Rewriter" mutations
only (constraints, deepening, concretizing, reasoning; +10-20 words each), from `evol_complexity/utils.py`.
eva H.1 found it the strongest of the evolvers it tried. Meta-prompt: prompts/evolve/evolcomplexity.txt,
mutations: prompts/evolve/evolcomplexity_mutations.txt.
"""

from __future__ import annotations

from evarl.creator.evolve.common import fill, load_mutations
from evarl.creator.evolve.evolinstruct import ChainEvolver
from evarl.io import load_template
from evarl.registry import EVOLVERS


@EVOLVERS.register("evolcomplexity")
class EvolComplexity(ChainEvolver):
    """EvolComplexity (Liu et al. 2023b): distilabel's four in-depth rewrites, +10-20 words per step."""

    name = "evolcomplexity"

    def mutations(self) -> list[str]:
        return sorted(load_mutations("evolcomplexity_mutations"))

    def render(self, mutation: str, text: str) -> str:
        return fill(
            load_template("evolcomplexity", "evolve"),
            text,
            load_mutations("evolcomplexity_mutations")[mutation],
        )

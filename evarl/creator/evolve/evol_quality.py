"""EvolQuality (Liu et al. 2023b; eva seed 001 appendix H.1), applied to prompts.

Deviation: distilabel's EvolQuality rewrites *responses* ("Response Rewriter"); eva H.1 describes it as asking to
improve the quality (helpfulness, relevance, ...) of the seed prompt, so the meta-prompt here rewrites the prompt
with the same five mutations (helpfulness, relevance, deepening, creativity, details). Meta-prompt:
prompts/evolve/evolquality.txt, mutations: prompts/evolve/evolquality_mutations.txt.
"""

from __future__ import annotations

from evarl.creator.evolve.common import fill, load_mutations
from evarl.creator.evolve.evolinstruct import ChainEvolver
from evarl.io import load_template
from evarl.registry import EVOLVERS


@EVOLVERS.register("evolquality")
class EvolQuality(ChainEvolver):
    """EvolQuality (Liu et al. 2023b) applied to prompts: rewrite for helpfulness, relevance, depth, creativity
    or detail (distilabel's version rewrites responses; eva H.1 uses it to improve the seed prompt)."""

    name = "evolquality"

    def mutations(self) -> list[str]:
        return sorted(load_mutations("evolquality_mutations"))

    def render(self, mutation: str, text: str) -> str:
        return fill(
            load_template("evolquality", "evolve"), text, load_mutations("evolquality_mutations")[mutation]
        )

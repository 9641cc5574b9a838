"""SelfInstruct (Wang et al. 2022; eva seed 001 appendix H.1) as an evolver.

distilabel's `self_instruct` one-shot template asks for new user queries "applicable to the provided context"
(the seed prompt), blending interrogative and imperative styles. As eva did, the conciseness criterion is changed
so the new query has about the seed's length; and we ask for one query per call and keep its first line, so each
child slot is one independent generation (distilabel asks for 5 and splits lines). With chain_depth > 1 the next
step uses the previous query as its context. Meta-prompt: prompts/evolve/selfinstruct.txt.
"""

from __future__ import annotations

from evarl.creator.evolve.common import fill, first_line, parse_rewrite
from evarl.creator.evolve.evolinstruct import ChainEvolver
from evarl.io import load_template
from evarl.registry import EVOLVERS


@EVOLVERS.register("selfinstruct")
class SelfInstruct(ChainEvolver):
    """SelfInstruct: a new standalone query inspired by the prompt (independent generation, not a rewrite)."""

    name = "selfinstruct"

    def mutations(self) -> list[str]:
        return ["selfinstruct"]

    def render(self, mutation: str, text: str) -> str:
        return fill(load_template("selfinstruct", "evolve"), text)

    def parse(self, raw: str) -> str:
        text = raw.split("# Output", 1)[-1] if "# Output" in raw else raw
        return parse_rewrite(first_line(parse_rewrite(text)))

"""EvolInstruct (Xu et al. 2023) with eva's ten evolving methods (seed 001 appendix F), as chained LLM rewrites.

Each step renders a meta-prompt, asks the creator model (`ctx.generator`, any backend) for one sample and parses
the rewrite; a chain of `ctx.chain_depth` steps rewrites the previous step's output (eva: 4). Methods:

    in-breadth (INST_IN_BREADTH "Prompt Creator"):  persona, shift-in, shift-out, mix, abstract
    in-depth   (INST_IN_DEPTH "Prompt Rewriter"):   constraints, deepening, concretizing, reasoning, expansion

`evolinstruct` picks one of the ten uniformly at each step (distilabel's EvolInstruct picks a random mutation per
round; eva v1 used distilabel's five, v2 lists these ten); each method name is also its own strategy.
Meta-prompts: prompts/evolve/in_depth.txt, in_breadth.txt, method_<name>.txt.

A step whose output has no usable text, or hit max_new_tokens (finish_reason "length"), ends its chain: the
child is still returned (with meta["evolve_error"] / meta["finish_reason"]) so the filters count it.
Deviation from the appendix text: its stray "n" line (a lost "\\n") is dropped.
"""

from __future__ import annotations

import random

from evarl.creator.evolve.base import EvolveContext, SlotEvolver
from evarl.creator.evolve.common import (
    fill,
    generate_one,
    make_child,
    parse_rewrite,
    source_text,
)
from evarl.dist import stable_int
from evarl.generation.base import SamplingParams
from evarl.io import load_template
from evarl.registry import EVOLVERS
from evarl.types import Prompt

IN_BREADTH_KEYS = ["persona", "shift-in", "shift-out", "mix", "abstract"]
IN_DEPTH_KEYS = ["constraints", "deepening", "concretizing", "reasoning", "expansion"]
EVOL_METHODS = IN_BREADTH_KEYS + IN_DEPTH_KEYS


def render_method(method: str, text: str) -> str:
    """The appendix-F meta-prompt for `method` applied to `text`."""
    if method not in EVOL_METHODS:
        raise KeyError(f"unknown evolving method {method!r}; known: {', '.join(EVOL_METHODS)}")
    template = load_template("in_breadth" if method in IN_BREADTH_KEYS else "in_depth", "evolve")
    return fill(template, text, load_template(f"method_{method}", "evolve"))


class ChainEvolver(SlotEvolver):
    """Chained single-sample LLM rewrites; subclasses choose the mutation and render the meta-prompt."""

    def mutations(self) -> list[str]:
        raise NotImplementedError

    def render(self, mutation: str, text: str) -> str:
        raise NotImplementedError

    def parse(self, raw: str) -> str:
        return parse_rewrite(raw)

    def pick(self, rng: random.Random) -> str:
        muts = self.mutations()
        return muts[0] if len(muts) == 1 else rng.choice(muts)

    def evolve_slots(self, slots: list[tuple[Prompt, int]], ctx: EvolveContext) -> list[Prompt]:
        out: list[Prompt] = []
        active = [(root, k, root) for root, k in slots]
        for step in range(1, ctx.chain_depth + 1):
            if not active:
                break
            muts = [
                self.pick(random.Random(f"{ctx.seed}|{ctx.round}|{self.name}|{root.id}|{k}|{step}"))
                for root, k, _ in active
            ]
            convs = [
                [{"role": "user", "content": self.render(m, source_text(prev))}]
                for m, (_, _, prev) in zip(muts, active)
            ]
            params = SamplingParams(
                n=1,
                temperature=ctx.temperature,
                top_p=1.0,
                max_new_tokens=ctx.max_new_tokens,
                seed=stable_int(ctx.seed, ctx.round, self.name, step),
            )
            gens = generate_one(ctx.generator, convs, params)
            nxt = []
            for (root, k, prev), mut, g in zip(active, muts, gens):
                text = self.parse(g.text)
                child = make_child(
                    root,
                    text,
                    method=self.name,
                    mutation=mut,
                    ctx_round=ctx.round,
                    k=k,
                    step=step,
                    prev=prev,
                    finish_reason=g.finish_reason,
                    raw=g.text,
                    error=None if text else "no usable text in creator output",
                )
                ends = not text or g.finish_reason == "length" or step == ctx.chain_depth
                if ends or ctx.keep_intermediate:
                    out.append(child)
                if not ends:
                    nxt.append((root, k, child))
            active = nxt
        return out


@EVOLVERS.register("evolinstruct")
class EvolInstruct(ChainEvolver):
    """EvolInstruct: each step applies one of the ten appendix-F methods, picked uniformly (eva's default)."""

    name = "evolinstruct"

    def mutations(self) -> list[str]:
        return EVOL_METHODS

    def render(self, mutation: str, text: str) -> str:
        return render_method(mutation, text)


class SingleMethod(ChainEvolver):
    """One appendix-F method at every step."""

    def mutations(self) -> list[str]:
        return [self.name]

    def render(self, mutation: str, text: str) -> str:
        return render_method(mutation, text)


def _single(method: str, doc: str) -> type:
    cls = type(
        method.replace("-", "_").title().replace("_", ""), (SingleMethod,), {"name": method, "__doc__": doc}
    )
    EVOLVERS.register(method)(cls)
    return cls


Persona = _single("persona", "In-breadth: reframe the prompt as written by a user with a different persona.")
ShiftIn = _single("shift-in", "In-breadth: shift the idea to a different subdomain of the same domain.")
ShiftOut = _single("shift-out", "In-breadth: shift the idea to a completely different topic and setting.")
Mix = _single("mix", "In-breadth: combine the prompt's concept with elements of another domain.")
Abstract = _single("abstract", "In-breadth: a more abstract, generalised version of the prompt.")
Constraints = _single("constraints", "In-depth: add significant constraints or requirements.")
Deepening = _single("deepening", "In-depth: increase the depth and breadth of the inquiry.")
Concretizing = _single("concretizing", "In-depth: replace general concepts with specific ones.")
Reasoning = _single("reasoning", "In-depth: demand multi-step reasoning.")
Expansion = _single("expansion", "In-depth: add perspectives, domains or layers of complexity.")

"""The verifiable-constraint evolver for the default task (evarl's own; eva's "constraints" method made exact).

eva's in-depth "constraints" mutation asks an LLM to add requirements in prose, which a verifier cannot check.
This strategy edits the prompt's verifiable constraint list instead (new constraints come from the
`task.checkers` pool: IFEval, IFBench or both), keeping the base task text: each step either
adds one constraint compatible with the existing ones (IFEval's conflict table, `evarl.tasks.constraints`) or
changes one (replaces a randomly chosen constraint by a different compatible one), with probability 1/2 each;
at `ctx.max_constraints` constraints it always changes. The user turn is rebuilt with `build_prompt_text`, so
the verifier reward checks exactly what the prompt states. No model call; seeded per (seed, round, parent, k,
step). Prompts without a task (file tasks) use their text as the task. When no compatible constraint exists the
child keeps the parent's text with meta["evolve_error"], so the `copy` filter counts it.
"""

from __future__ import annotations

import random

from evarl.creator.evolve.base import EvolveContext, SlotEvolver
from evarl.creator.evolve.common import make_child
from evarl.registry import EVOLVERS
from evarl.types import Constraint, Prompt


def evolve_constraints(
    rng: random.Random, existing: list[Constraint], max_constraints: int, pool: str = "ifeval"
) -> tuple[list[Constraint], str] | None:
    """(new constraint list, "add:<id>" | "change:<old>-><new>") or None when nothing compatible is left."""
    from evarl.tasks.constraints import random_constraint

    ops = ["change"] if len(existing) >= max_constraints else ["add", "change"] if existing else ["add"]
    rng.shuffle(ops)
    for op in ops:
        if op == "add":
            c = random_constraint(rng, existing, pool)
            if c is not None:
                return [*existing, c], f"add:{c.id}"
        else:
            for i in rng.sample(range(len(existing)), len(existing)):
                rest = existing[:i] + existing[i + 1 :]
                for _ in range(4):  # the sampler may redraw the same constraint; try a few times
                    c = random_constraint(rng, rest, pool)
                    if c is None:
                        break
                    if c != existing[i]:
                        return rest[:i] + [c] + rest[i:], f"change:{existing[i].id}->{c.id}"
    return None


@EVOLVERS.register("constraint")
class ConstraintEvolver(SlotEvolver):
    """Add or change one verifiable constraint, keeping the base task (no model call)."""

    name = "constraint"

    def evolve_slots(self, slots: list[tuple[Prompt, int]], ctx: EvolveContext) -> list[Prompt]:
        if ctx.max_constraints < 1:
            raise ValueError(f"creator.max_constraints: must be >= 1, got {ctx.max_constraints}")
        out: list[Prompt] = []
        for root, k in slots:
            rng = random.Random(f"{ctx.seed}|{ctx.round}|{self.name}|{root.id}|{k}")
            prev = root
            if not root.task:  # a file prompt: its text becomes the task the constraints are appended to
                prev = Prompt(**{**root.__dict__, "task": root.text})
            for step in range(1, ctx.chain_depth + 1):
                edit = evolve_constraints(rng, prev.constraints, ctx.max_constraints, ctx.checkers)
                cons, op = edit if edit else (prev.constraints, "none")
                child = make_child(
                    root,
                    prev.task,
                    method=self.name,
                    mutation=op,
                    ctx_round=ctx.round,
                    k=k,
                    step=step,
                    prev=prev,
                    constraints=cons,
                    error=None if edit else "no compatible constraint left",
                )
                ends = edit is None or step == ctx.chain_depth
                if ends or ctx.keep_intermediate:
                    out.append(child)
                if ends:
                    break
                prev = child
        return out

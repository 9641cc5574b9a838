"""The embedded default task: instruction following with verifiable constraints.

Shipped base tasks (`evarl/data/base_tasks.jsonl`, 255 tasks in 12 categories written for evarl), each combined
with 1–3 verifiable constraints sampled deterministically from the task id and seed, from the pool
`task.checkers` names (IFEval by default, IFBench, or both; `evarl.tasks.constraints`). The reward is the
fraction of constraints satisfied (see `evarl.rewards.verifier`). The held-out split uses base tasks that never
appear in training: `evarl/data/heldout.jsonl` (IFEval constraints) and `evarl/data/heldout_ifbench.jsonl`
(the same tasks with IFBench constraints), both in IFEval's file format.
"""

from __future__ import annotations

import hashlib
import random
from importlib import resources
from pathlib import Path

from evarl.io import read_jsonl, write_jsonl
from evarl.registry import DEFAULT_TASK
from evarl.tasks.constraints import build_prompt_text, pool_samplers, sample_constraints
from evarl.types import Constraint, Prompt

HELDOUT_EVERY = 5  # every 5th base task is held out


def _data_path(name: str) -> Path:
    return Path(str(resources.files("evarl") / "data" / name))


def load_base_tasks(name: str = "base_tasks.jsonl") -> list[dict[str, str]]:
    """The shipped base tasks (`base_tasks.jsonl`; `heldout_tasks.jsonl` holds held-out-only tasks)."""
    return read_jsonl(_data_path(name))


def _rng(*parts: object) -> random.Random:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def make_prompt(
    row: dict[str, str], seed: int, min_c: int, max_c: int, prefix: str, pool: str = "ifeval"
) -> Prompt:
    rng = _rng(prefix, row["id"], seed) if pool == "ifeval" else _rng(prefix, row["id"], seed, pool)
    constraints = sample_constraints(rng, rng.randint(min_c, max_c), pool)
    text = build_prompt_text(row["task"], constraints)
    return Prompt(
        id=f"{prefix}-{row['id']}",
        messages=[{"role": "user", "content": text}],
        task=row["task"],
        constraints=constraints,
        category=row.get("category", ""),
    )


def train_prompts(
    n: int, seed: int = 0, min_constraints: int = 1, max_constraints: int = 3, checkers: str = "ifeval"
) -> list[Prompt]:
    """`n` training prompts: a seeded sample of the non-held-out base tasks with fresh constraints from the
    `checkers` pool."""
    rows = [r for i, r in enumerate(load_base_tasks()) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    rng = _rng("train-order", seed)
    rng.shuffle(rows)
    if n > len(rows):
        raise ValueError(
            f"task.train_prompts: at most {len(rows)} default training prompts exist, asked for {n}"
        )
    return [make_prompt(r, seed, min_constraints, max_constraints, "s", checkers) for r in rows[:n]]


def train_pool_size() -> int:
    """How many default training prompts exist (the base tasks that are not held out)."""
    return sum(1 for i, _ in enumerate(load_base_tasks()) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1)


DEFAULT_TASK.register("train_pool_size")(train_pool_size)


def heldout_rows() -> list[dict[str, str]]:
    """Every 5th base task (51), then the 249 held-out-only tasks of `heldout_tasks.jsonl`: 300 in all, so the
    paired 95% interval of a prompt-level accuracy difference is about +-5 points (issue: statistics)."""
    rule = [r for i, r in enumerate(load_base_tasks()) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
    return rule + load_base_tasks("heldout_tasks.jsonl")


HELDOUT_FILES = {"ifeval": "heldout.jsonl", "ifbench": "heldout_ifbench.jsonl"}
DEFAULT_TASK.register("heldout_files")(HELDOUT_FILES)


def heldout_prompts(n: int | None = None, checkers: str = "ifeval") -> list[Prompt]:
    """The shipped held-out set for a constraint pool (IFEval file format); fixed constraints so every run is
    measured on the same set. "all" alternates the IFEval and IFBench sets (the same base tasks, so each task
    appears once with each benchmark's constraints)."""
    from evarl.datasets_in import read_prompts

    if checkers == "all":
        a, b = heldout_prompts(None, "ifeval"), heldout_prompts(None, "ifbench")
        prompts = [p for pair in zip(a, b) for p in pair]
    else:
        pool_samplers(checkers)  # an unknown pool is a ValueError naming task.checkers
        prompts = read_prompts(_data_path(HELDOUT_FILES[checkers]))
    return prompts if n is None else prompts[:n]


def write_heldout_file(path: Path, checkers: str = "ifeval") -> None:
    """Regenerate `data/heldout.jsonl` (or, for "ifbench", `data/heldout_ifbench.jsonl`; IFEval file format)
    from the held-out base tasks (maintainers only)."""
    prefix = "h" if checkers == "ifeval" else f"h-{checkers}"
    rows = []
    for r in heldout_rows():
        p = make_prompt(r, 1234, 1, 3, prefix, checkers)
        rows.append(
            {
                "key": p.id,
                "prompt": p.text,
                "instruction_id_list": [c.id for c in p.constraints],
                "kwargs": [c.kwargs for c in p.constraints],
                "category": p.category,
                "task": p.task,
            }
        )
    write_jsonl(path, rows)


__all__ = ["Constraint", "heldout_prompts", "train_prompts", "write_heldout_file"]

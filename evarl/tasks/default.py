"""The embedded default task: instruction following with verifiable constraints.

Shipped base tasks (`evarl/data/base_tasks.jsonl`, 255 tasks in 12 categories written for evarl), each combined
with 1–3 IFEval constraints sampled deterministically from the task id and seed. The reward is the fraction of
constraints satisfied (see `evarl.rewards.verifier`). The held-out split (`evarl/data/heldout.jsonl`, IFEval
format) uses base tasks that never appear in training.
"""

from __future__ import annotations

import hashlib
import json
import random
from importlib import resources
from pathlib import Path

from evarl.tasks.constraints import build_prompt_text, sample_constraints
from evarl.types import Constraint, Prompt

HELDOUT_EVERY = 5  # every 5th base task is held out


def _data_path(name: str) -> Path:
    return Path(str(resources.files("evarl") / "data" / name))


def load_base_tasks() -> list[dict[str, str]]:
    path = _data_path("base_tasks.jsonl")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from e
    return rows


def _rng(*parts: object) -> random.Random:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def make_prompt(row: dict[str, str], seed: int, min_c: int, max_c: int, prefix: str) -> Prompt:
    rng = _rng(prefix, row["id"], seed)
    constraints = sample_constraints(rng, rng.randint(min_c, max_c))
    text = build_prompt_text(row["task"], constraints)
    return Prompt(
        id=f"{prefix}-{row['id']}",
        messages=[{"role": "user", "content": text}],
        task=row["task"],
        constraints=constraints,
        category=row.get("category", ""),
    )


def train_prompts(n: int, seed: int = 0, min_constraints: int = 1, max_constraints: int = 3) -> list[Prompt]:
    """`n` training prompts: a seeded sample of the non-held-out base tasks with fresh constraints."""
    rows = [r for i, r in enumerate(load_base_tasks()) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    rng = _rng("train-order", seed)
    rng.shuffle(rows)
    if n > len(rows):
        raise ValueError(
            f"task.train_prompts: at most {len(rows)} default training prompts exist, asked for {n}"
        )
    return [make_prompt(r, seed, min_constraints, max_constraints, "s") for r in rows[:n]]


def heldout_rows() -> list[dict[str, str]]:
    return [r for i, r in enumerate(load_base_tasks()) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]


def heldout_prompts(n: int | None = None) -> list[Prompt]:
    """The shipped held-out set (IFEval format); fixed constraints so every run is measured on the same set."""
    from evarl.data_io import read_ifeval_prompts

    prompts = read_ifeval_prompts(_data_path("heldout.jsonl"))
    return prompts if n is None else prompts[:n]


def write_heldout_file(path: Path) -> None:
    """Regenerate `data/heldout.jsonl` (IFEval format) from the held-out base tasks (maintainers only)."""
    with open(path, "w") as f:
        for r in heldout_rows():
            p = make_prompt(r, 1234, 1, 3, "h")
            f.write(
                json.dumps(
                    {
                        "key": p.id,
                        "prompt": p.text,
                        "instruction_id_list": [c.id for c in p.constraints],
                        "kwargs": [c.kwargs for c in p.constraints],
                        "category": p.category,
                        "task": p.task,
                    }
                )
                + "\n"
            )


__all__ = ["Constraint", "heldout_prompts", "train_prompts", "write_heldout_file"]

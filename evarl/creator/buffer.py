"""Prioritized generative buffer for online eva (seed 001 §3, "Prioritized Generative Buffer", appendix A).

Evolved prompts wait in a fixed-size buffer, prioritised by informativeness, until the solver trains on them:
warm-up fills it from the evolved children of each mini-batch's most informative prompts; in mix-up half of
each mini-batch is drawn from it by weighted sampling (without replacement) and half i.i.d. from the dataset;
in bootstrap (dataset exhausted) the whole mini-batch comes from it. Trained prompts are popped, and the oldest
are evicted beyond capacity. Deviation: a child's priority is its parent's informativeness until the child
itself has been scored (the paper does not say how unscored prompts are prioritised).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from evarl.creator.informativeness import to_weights
from evarl.types import Prompt


@dataclass
class BufferItem:
    prompt: Prompt
    priority: float
    added_step: int


class GenerativeBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"online.buffer_size: must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[BufferItem] = []  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self.items)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.capacity

    def ids(self) -> set[str]:
        return {it.prompt.id for it in self.items}

    def add(self, prompts: list[Prompt], priorities: list[float], step: int) -> int:
        """Add prompts (ids already present are skipped); evict the oldest beyond capacity. Returns evictions."""
        have = self.ids()
        for p, w in zip(prompts, priorities, strict=True):
            if p.id not in have:
                self.items.append(BufferItem(p, float(w), step))
                have.add(p.id)
        evicted = max(0, len(self.items) - self.capacity)
        if evicted:
            self.items = self.items[evicted:]
        return evicted

    def sample(self, k: int, rng: random.Random) -> list[Prompt]:
        """k prompts by priority-weighted sampling without replacement (all of them if k >= len)."""
        if k >= len(self.items):
            return [it.prompt for it in self.items]
        weights = list(to_weights([it.priority for it in self.items]))
        idx = list(range(len(self.items)))
        chosen: list[int] = []
        for _ in range(k):
            total = sum(weights[i] for i in idx)
            x, acc = rng.random() * total, 0.0
            pick = idx[-1]
            for i in idx:
                acc += weights[i]
                if acc >= x:
                    pick = i
                    break
            chosen.append(pick)
            idx.remove(pick)
        return [self.items[i].prompt for i in sorted(chosen)]

    def pop(self, ids: set[str]) -> int:
        """Remove trained prompts; returns how many were removed."""
        before = len(self.items)
        self.items = [it for it in self.items if it.prompt.id not in ids]
        return before - len(self.items)

    def to_rows(self) -> list[dict]:
        return [
            {"prompt": it.prompt.to_dict(), "priority": it.priority, "added_step": it.added_step}
            for it in self.items
        ]

    @classmethod
    def from_rows(cls, capacity: int, rows: list[dict]) -> GenerativeBuffer:
        b = cls(capacity)
        b.items = [
            BufferItem(Prompt.from_dict(r["prompt"]), float(r["priority"]), int(r["added_step"]))
            for r in rows
        ]
        return b


def phase(buffer: GenerativeBuffer, dataset_left: int) -> str:
    """warmup (buffer filling, dataset left) | mixup (buffer full, dataset left) | bootstrap (dataset exhausted)."""
    if dataset_left <= 0:
        return "bootstrap"
    return "mixup" if buffer.full else "warmup"

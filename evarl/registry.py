"""One small registry per plug-in kind. A config names a plug-in; `evarl list` prints them all.

Plain callables register with a decorator; users can register their own before calling `evarl.loop.run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    def __init__(self, kind: str, doc: str) -> None:
        self.kind = kind
        self.doc = doc
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        load_plugins()
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items

    def describe(self, name: str) -> str:
        obj = self.get(name)
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        return doc[0] if doc else ""


METRICS = Registry("metric", "informativeness of a prompt from its responses' rewards")
SAMPLERS = Registry("sampler", "how informative prompts are picked")
EVOLVERS = Registry("evolve method", "how new prompts are evolved from informative ones")
FILTERS = Registry("filter", "drops evolved prompts, counted by reason")
REWARDS = Registry("reward source", "scores (prompt, response)")
LOSSES = Registry("loss", "preference-optimisation losses over sequence log-probs")
PAIR_RULES = Registry("pair rule", "builds (chosen, rejected) from scored responses")
BACKENDS = Registry("generation backend", "samples responses from a model")

ALL = [METRICS, SAMPLERS, EVOLVERS, FILTERS, REWARDS, LOSSES, PAIR_RULES, BACKENDS]

# Modules whose import registers plug-ins. Heavy dependencies inside them are imported lazily.
PLUGIN_MODULES = [
    "evarl.creator.informativeness",
    "evarl.creator.sampling",
    "evarl.creator.evolve",
    "evarl.creator.filters",
    "evarl.rewards",
    "evarl.solver.losses",
    "evarl.solver.pairs",
    "evarl.generation",
]

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)

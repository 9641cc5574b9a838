"""One small registry per plug-in kind. A config names a plug-in; `evarl list` prints them all.

Plain callables register with a decorator. A user's own plug-ins (a metric, an evolver, a reward source, a
loss, ...) live in a module that registers them on import; evarl imports it before validating a config when

* the config lists it: ``plugins: [my_package.evarl_plugins]`` (any importable module; the current directory
  is searched too, as ``python -m`` would), or
* an installed package declares it as an entry point of the ``evarl.plugins`` group (pyproject.toml:
  ``[project.entry-points."evarl.plugins"] my_plugins = "my_package.evarl_plugins"``); those are imported
  with the built-ins, so ``evarl list`` shows them too.

A module that fails to import (or raises while registering, e.g. a name that is already taken) stops with one
:class:`evarl.errors.PluginError` naming the module and where it failed.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from evarl.errors import PluginError

ENTRY_POINT_GROUP = "evarl.plugins"


class Registry:
    """Names -> plug-ins of one kind. `modules`: the modules that fill this registry, imported on the first
    lookup (a registry the base layer reads, e.g. `evarl.data_io`, then never imports every plug-in); empty:
    every plug-in module and entry point (`load_plugins`)."""

    def __init__(self, kind: str, doc: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self.doc = doc
        self.modules = tuple(modules)
        self._items: dict[str, Any] = {}

    def fill(self) -> None:
        """Import the modules that register this registry's plug-ins (once; later calls are cheap)."""
        if not self.modules:
            load_plugins()
        for mod in self.modules:
            importlib.import_module(mod)

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        self.fill()
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        self.fill()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self.fill()
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

# What the base layer checks by name, registered by the modules above it that own the names, so that
# `evarl.config` and `evarl.data_io` import nothing above them.
SOLVER_PRESETS = Registry(
    "solver preset", "solver hyper-parameters from the papers (solver.preset)", ["evarl.solver.presets"]
)
CHECKER_POOLS = Registry(
    "checker pool",
    "the verifiable checkers the default task draws from (task.checkers)",
    ["evarl.tasks.constraints"],
)
PROMPT_ROW_CHECKS = Registry(
    "prompt-row check", "checks a prompt row when a prompt file is read", ["evarl.tasks.validate"]
)
DEFAULT_TASK = Registry(
    "default-task fact",
    "what the shipped default task can supply (prompt counts, held-out files), for validation",
    ["evarl.tasks.default"],
)

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
_loading = False


def load_plugins() -> None:
    """Import the built-in plug-in modules, then every ``evarl.plugins`` entry point (once per process; a
    failing entry point raises again on the next call)."""
    global _loaded, _loading
    if _loaded or _loading:  # _loading: a plug-in module that looks a name up while it registers
        return
    _loading = True
    try:
        for mod in PLUGIN_MODULES:
            importlib.import_module(mod)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _import_plugin(ep.value.split(":")[0].strip(), f"entry point {ENTRY_POINT_GROUP}:{ep.name}")
        _loaded = True
    finally:
        _loading = False


def _where(exc: BaseException) -> str:
    """file:line of a syntax error, or of the innermost frame that raised."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "importlib" not in f.filename]
    return f" ({inner[-1].filename}:{inner[-1].lineno})" if inner else ""


def _import_plugin(module: str, label: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 (any failure of a user's module becomes one clear message)
        if isinstance(exc, ModuleNotFoundError) and exc.name and (module + ".").startswith(exc.name + "."):
            raise PluginError(
                f"{label}: plug-in module {module!r} not found (not importable from sys.path or the "
                "current directory; is its package installed?)"
            ) from exc
        raise PluginError(
            f"{label}: plug-in module {module!r} failed to import: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc


def import_plugins(modules: Sequence[str], field: str = "plugins") -> None:
    """Import the built-ins, the entry points and then each module of a config's ``plugins`` list, so the
    names they register can be checked and used. Raises :class:`PluginError` naming ``field[i]`` and the module."""
    load_plugins()
    cwd = os.getcwd()
    if modules and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # `evarl run` (a console script) searches the current directory like `python -m`
    for i, module in enumerate(modules):
        name = str(module).strip()
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise PluginError(f"{field}[{i}]: {module!r} is not a module name (dotted.python.name)")
        _import_plugin(name, f"{field}[{i}]")

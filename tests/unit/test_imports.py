"""The import graph of `evarl` points down: no module imports itself back through any chain of imports.

Every module under `evarl/` is parsed with `ast` (nothing is imported). An edge A -> B is recorded for every
import of B anywhere in A: top-level or inside a function, `if TYPE_CHECKING:` included, absolute or relative,
`from pkg import name` where `name` is a submodule (an edge to the submodule), and
`importlib.import_module("literal")`. Importing `evarl.a.b` from outside the package `evarl.a` also runs
`evarl/a/__init__.py`, so it is an edge to `evarl.a` as well. A lazy import inside a function is still an
edge: hiding a circle in a function body does not remove it.

A second check: no module imports a private name (leading underscore) from another evarl module, neither with
`from evarl.x import _name` nor as `x._name` through a module it imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "evarl"


@dataclass
class Module:
    name: str
    path: Path  # relative to the folder that holds the package
    is_package: bool
    tree: ast.Module
    # target module -> line numbers of the imports that make the edge
    imports: dict[str, list[int]] = field(default_factory=dict)
    # (line, description) of private names taken from other evarl modules
    private: list[tuple[int, str]] = field(default_factory=list)


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_modules(root: Path) -> dict[str, Module]:
    mods = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        mods[name] = Module(name, path.relative_to(root.parent), path.name == "__init__.py", tree)
    return mods


def resolve_relative(mod: Module, level: int, target: str | None) -> str:
    """The absolute name of `from <dots><target> import ...` written in `mod`."""
    package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
    parts = package.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    base = ".".join(parts)
    return f"{base}.{target}" if target else base


def owning_module(dotted: str, known: dict[str, Module]) -> str | None:
    """The longest prefix of `dotted` that is an evarl module (`evarl.a.b.attr` -> `evarl.a.b`)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in known:
            return cand
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def import_module_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """`importlib.import_module("evarl.x")` and `import_module("evarl.x")` calls with a literal name."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        arg = node.args[0]
        if fname == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield node.lineno, arg.value


def collect(mods: dict[str, Module]) -> None:
    for mod in mods.values():
        collect_module(mod, mods)


def collect_module(mod: Module, mods: dict[str, Module]) -> None:
    """Fill `mod.imports` and `mod.private` from its syntax tree."""
    module_aliases: dict[str, str] = {}  # local name -> evarl module it is bound to

    package = mod.name if mod.is_package else mod.name.rpartition(".")[0]

    def edge(target: str | None, line: int) -> None:
        if target is None:
            return
        # importing evarl.a.b.c runs the __init__ of evarl.a and evarl.a.b first, unless this module is inside
        # them (then they are already being imported): those packages are imported too
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            t = ".".join(parts[:i])
            inside = package == t or package.startswith(t + ".")
            if t != mod.name and not inside and (t == target or mods[t].is_package):
                mod.imports.setdefault(t, []).append(line)

    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = owning_module(a.name, mods)
                edge(target, node.lineno)
                if target is not None:
                    if any(is_private(p) for p in a.name.split(".")):
                        mod.private.append((node.lineno, f"import {a.name}"))
                    if a.asname:
                        module_aliases[a.asname] = target
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(mod, node.level, node.module) if node.level else node.module or ""
            base_mod = owning_module(base, mods)
            if base_mod is None:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in mods:  # `from pkg import submodule`
                    edge(sub, node.lineno)
                    module_aliases[a.asname or a.name] = sub
                else:
                    edge(base_mod, node.lineno)
                if is_private(a.name) and base_mod != mod.name:
                    mod.private.append((node.lineno, f"from {base} import {a.name}"))
    for line, name in import_module_literals(mod.tree):
        edge(owning_module(name, mods), line)
    for node in ast.walk(mod.tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and module_aliases[node.value.id] != mod.name
            and is_private(node.attr)
        ):
            mod.private.append(
                (node.lineno, f"{node.value.id}.{node.attr} ({module_aliases[node.value.id]})")
            )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS with colours (white/grey/black)."""
    colour = dict.fromkeys(graph, 0)
    for start in sorted(graph):
        if colour[start]:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt, 2) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph[nxt]))))
    return None


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each holds at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def describe_cycle(cycle: list[str], mods: dict[str, Module]) -> str:
    hops = []
    for a, b in zip(cycle, cycle[1:]):
        lines = ",".join(str(n) for n in sorted(set(mods[a].imports[b])))
        hops.append(f"  {a} ({mods[a].path}:{lines}) -> {b}")
    return "\n".join(hops)


def build(root: Path = ROOT) -> tuple[dict[str, Module], dict[str, set[str]]]:
    mods = load_modules(root)
    collect(mods)
    return mods, {name: set(m.imports) for name, m in mods.items()}


def test_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walker on a small package: absolute, relative, submodule-by-name, function-level, import_module,
    the package __init__ an import from outside runs, and a cycle that only closes through such an __init__."""
    pkg = tmp_path / "evarl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "pk").mkdir()
    files = {
        "__init__.py": "",
        "a.py": "import evarl.b\n",
        "b.py": "def f():\n    from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..d import thing\nfrom evarl.sub import x\n",
        "sub/x.py": "",
        "d.py": "import importlib\nthing = 1\ndef g():\n    importlib.import_module('evarl.e')\n",
        "e.py": "from evarl.sub.c import _hidden\nfrom evarl import a as aa\naa._x\n",
        # pk/__init__ imports pk.m, which imports f, which imports pk.leaf: importing pk.leaf runs pk/__init__
        "pk/__init__.py": "from evarl.pk import m\n",
        "pk/m.py": "import evarl.f\n",
        "pk/leaf.py": "",
        "f.py": "from evarl.pk.leaf import y\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    mods, graph = build(pkg)
    assert graph["evarl.a"] == {"evarl.b"}
    assert graph["evarl.b"] == {"evarl.sub", "evarl.sub.c"}
    assert graph["evarl.sub.c"] == {"evarl.d", "evarl.sub.x"}  # inside evarl.sub: no edge to its __init__
    assert graph["evarl.d"] == {"evarl.e"}
    assert graph["evarl.e"] == {"evarl.sub", "evarl.sub.c", "evarl.a"}
    assert graph["evarl.f"] == {"evarl.pk", "evarl.pk.leaf"}
    assert find_cycle(graph) == ["evarl.a", "evarl.b", "evarl.sub.c", "evarl.d", "evarl.e", "evarl.a"]
    assert strongly_connected(graph) == [
        ["evarl.a", "evarl.b", "evarl.d", "evarl.e", "evarl.sub.c"],
        ["evarl.f", "evarl.pk", "evarl.pk.m"],
    ]
    assert [d for _, d in mods["evarl.e"].private] == [
        "from evarl.sub.c import _hidden",
        "aa._x (evarl.a)",
    ]


def test_no_import_cycles() -> None:
    mods, graph = build()
    assert len(mods) > 50, f"only {len(mods)} modules found under {ROOT}"
    comps = strongly_connected(graph)
    cycle = find_cycle(graph)
    if cycle is not None:
        msg = [f"import cycle: {' -> '.join(cycle)}", describe_cycle(cycle, mods)]
        msg += ["modules caught in cycles (strongly connected groups):"]
        msg += [f"  {', '.join(c)}" for c in comps]
        print("\n".join(msg))
        raise AssertionError("\n".join(msg))
    assert comps == []


def test_no_private_names_imported_across_modules() -> None:
    mods, _ = build()
    found = [f"{m.path}:{line}: {what}" for m in mods.values() for line, what in m.private]
    assert not found, "private names imported from another evarl module:\n" + "\n".join(found)

"""The shape of the package, read from the source (ast; no module is imported): each package is
entered through its public face, no two modules import each other (function-local imports
count), a lower layer never imports a higher one, and no module grows past ~600 lines.

Layers, lowest first: pki < tls < tunnel < servers, debug < _hub (``hub.py`` is its face) <
jupyter, _runtime, _inspect < api < widgets < the command line.  ``render`` and ``pvclient``
stand alone (they import none of tunnel, servers, _hub).  ``vocab``, ``errors``, ``_fs``,
``_wire``, ``_accept``, ``_portal``, ``_lazy``, ``_notes``, ``_proc`` and ``_version`` are shared
by every layer.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "paraconnect"
MAX_LINES = 600

# Top-level modules every layer may import (and which import nothing above them).
SHARED = {
    "vocab",
    "errors",
    "_fs",
    "_wire",
    "_accept",
    "_version",
    "_portal",
    "_lazy",
    "_notes",
    "_proc",
}

# unit -> rank; a module may import a unit of lower rank, its own unit, or a shared module.
RANK = {
    "pki": 1,
    "tls": 2,
    "tunnel": 3,
    "servers": 4,
    "debug": 4,
    "_hub": 5,
    "jupyter": 6,
    "_runtime": 6,
    "_inspect": 6,
    "api": 7,
    "widgets": 8,
    "(top)": 9,
}
# render and pvclient import only shared modules; anything from the notebook layers up may use
# them.
STANDALONE = {"render", "pvclient"}

# ``vocab.LAUNCHERS`` is read from the launcher registry (servers/_launchers.py, which imports
# only ``errors``) when first asked for, by design of issue 13 item 8: the one edge from a
# shared module upwards, and the only loop it closes is through the servers package's face.
ALLOWED_EDGES = {("paraconnect.vocab", "paraconnect.servers")}


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    runtime: bool  # False for imports under ``if TYPE_CHECKING:``, which never run


def _modname(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_modname(p): p for p in sorted(ROOT.rglob("*.py"))}
# A compiled module (tunnel/_crelay.c) is known by its stub: an import of it is an edge to it,
# not to its package, and it imports nothing of ours.
MODULES.update(
    {_modname(p): p for p in sorted(ROOT.rglob("*.pyi")) if not p.with_suffix(".py").exists()}
)


def unit(module: str) -> str:
    """The package a module belongs to (``hub.py`` is ``_hub``'s face)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "(top)"
    if parts[1] == "hub":
        return "_hub"
    if parts[1] in ("_api_sessions", "_api_web"):  # api.py's helpers, beside it
        return "api"
    if (ROOT / parts[1]).is_dir() or parts[1] in SHARED or parts[1] in RANK:
        return parts[1]
    return "(top)"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _edges() -> list[Edge]:
    edges = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        hidden = _type_checking_lines(tree)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    where = ".".join(base + ([node.module] if node.module else []))
                else:
                    where = node.module or ""
                # ``from pkg import mod`` imports the module; ``from pkg import name`` the package.
                subs = [f"{where}.{a.name}" for a in node.names if f"{where}.{a.name}" in MODULES]
                targets = subs or [where]
            for target in targets:
                if not target.startswith("paraconnect"):
                    continue
                while target not in MODULES and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    edges.append(Edge(module, target, node.lineno, node.lineno not in hidden))
    return edges


EDGES = _edges()


def _private_cross(edge: Edge) -> bool:
    if unit(edge.source) == unit(edge.target):
        return False
    parts = edge.target.split(".")[1:]
    if len(parts) == 1:  # top-level modules: shared helpers, or the front ends' own
        return False
    return any(p.startswith("_") and not p.startswith("__") for p in parts[1:]) or (
        parts[0].startswith("_") and parts[0] != "_hub"
    )


def private_imports() -> set[str]:
    return {f"{e.source} -> {e.target}" for e in EDGES if _private_cross(e)}


def cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan); imports for type checking count too:
    a loop there is a loop in the design, and one import moved out of the block makes it run."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in EDGES:
        if (e.source, e.target) not in ALLOWED_EDGES:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations() -> list[str]:
    bad = []
    for e in EDGES:
        src, dst = unit(e.source), unit(e.target)
        if src == dst or dst in SHARED or (e.source, e.target) in ALLOWED_EDGES:
            continue
        where = f"{MODULES[e.source].relative_to(ROOT.parent)}:{e.line}"
        if src in STANDALONE:
            bad.append(f"{where}: {e.source} (standalone) imports {e.target}")
        elif src in SHARED:
            bad.append(f"{where}: shared module {e.source} imports {e.target}")
        elif dst in STANDALONE:
            if RANK[src] < RANK["jupyter"]:
                bad.append(f"{where}: {e.source} imports the standalone {e.target}")
        elif RANK[dst] >= RANK[src]:
            bad.append(f"{where}: {e.source} (layer {src}) imports higher {e.target} ({dst})")
    return bad


def _lines(module: str) -> int:
    return len(MODULES[module].read_text().splitlines())


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = {m for m in MODULES if unit(m) not in RANK | dict.fromkeys(SHARED | STANDALONE)}
    assert not unplaced, f"add these to RANK in tests/test_layers.py: {sorted(unplaced)}"


def test_no_private_imports_across_packages() -> None:
    bad = private_imports()
    assert not bad, "import these from the package's __init__ instead:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    found = cycles()
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_lower_layers_never_import_higher_ones() -> None:
    bad = layer_violations()
    assert not bad, "\n".join(bad)


def test_no_module_over_600_lines() -> None:
    long = {m: _lines(m) for m in MODULES if _lines(m) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


def test_the_checks_see_what_they_should() -> None:
    """The parser resolves relative, package and function-local imports (guards the guard)."""
    bundle = {e.target for e in EDGES if e.source == "paraconnect.pki._bundle"}
    assert "paraconnect.pki._certs" in bundle
    # function-local: load_credentials reads a bundle only when given a file
    assert "paraconnect.pki._bundle" in {
        e.target for e in EDGES if e.source == "paraconnect.pki._creds"
    }
    hub_face = {e.target for e in EDGES if e.source == "paraconnect.hub"}
    assert "paraconnect._hub._core" in hub_face
    assert unit("paraconnect.hub") == "_hub"
    assert _private_cross(Edge("paraconnect.api", "paraconnect._hub._client", 1, True))
    assert not _private_cross(Edge("paraconnect.api", "paraconnect.hub", 1, True))
    assert not _private_cross(Edge("paraconnect.tunnel._x", "paraconnect._wire", 1, True))

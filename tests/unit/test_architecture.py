"""The layering in docs/architecture.md, checked on the real import graph: every import
counts (inside functions and ``TYPE_CHECKING`` blocks too), and no cycle is allowed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"litegate": ROOT / "litegate", "litegate.admin": ROOT / "admin",
            "litegate.migrations": ROOT / "migrations"}
HANDLERS = ("litegate.proxy", "litegate.aggregate", "litegate.feedback", "litegate.upstreams",
            "litegate.inference", "litegate.grpc_api")
SHELLS = ("litegate.app", "litegate.asgi", "litegate.mount", "litegate.plugin",
          "litegate.health", "litegate.openapi", "litegate.openapi_admin", "litegate.apidocs",
          "litegate.demo", "litegate.cli", "litegate.connections",
          "litegate.admin", "litegate.ops")
ASGI = ("litegate.asgi_types", "litegate.request", "litegate.responses")
BASE = ("litegate.asgi_types", "litegate.errors", "litegate.responses", "litegate.settings",
        "litegate.jsonbody", "litegate.multipart", "litegate.faults", "litegate.snapshot",
        "litegate.origins", "litegate.redis_wire",
        "litegate.request", "litegate.log_config", "litegate.progress", "litegate.db",
        "litegate.services")
BASE_EXCEPTIONS = {
    # docs/architecture.md, "The one exception": registering a model runs the engine's
    # file checks from the one write path.
    ("litegate.services.models", "litegate.inference.files"),
    ("litegate.services.models", "litegate.inference.session"),
    ("litegate.services.models", "litegate.inference.quantize"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _modules()


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = anchor + ("." + node.module if node.module else "")
            targets = [base + "." + a.name for a in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target)
            if owner is not None and owner != name:
                found.add(owner)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_is_real():
    assert "litegate.policies.limiting" in GRAPH["litegate.gateway"]
    assert "litegate.gateway" in GRAPH["litegate.app"]


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


RULES = [
    ("base", BASE, ("litegate.policies", "litegate.middleware", *HANDLERS, "litegate.gateway",
                    *SHELLS)),
    ("policies", ("litegate.policies",), ("litegate.middleware", *HANDLERS, "litegate.gateway", *SHELLS, *ASGI)),
    ("pipeline", ("litegate.middleware",), (*HANDLERS, "litegate.gateway", *SHELLS)),
    ("handlers", HANDLERS, ("litegate.middleware", "litegate.gateway", *SHELLS)),
]


@pytest.mark.parametrize("layer,members,forbidden", RULES, ids=[r[0] for r in RULES])
def test_layers_point_one_way(layer, members, forbidden):
    wrong = sorted(
        f"{m} -> {d}" for m, deps in GRAPH.items() if _in(m, members)
        for d in deps if _in(d, forbidden) and (m, d) not in BASE_EXCEPTIONS
    )
    assert wrong == [], f"{layer} imports upward"


def test_the_base_layer_exceptions_are_still_needed():
    """An exception nothing uses any more goes from the list and the doc."""
    assert sorted(e for e in BASE_EXCEPTIONS if e[1] not in GRAPH[e[0]]) == []


def test_only_shells_import_the_composition_root():
    importers = sorted(m for m, deps in GRAPH.items() if "litegate.gateway" in deps)
    assert [m for m in importers if not _in(m, SHELLS) and m != "litegate"] == []


def test_the_console_does_not_import_the_cli():
    """Both are shells over the services; what they share lives below them."""
    wrong = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _in(m, ("litegate.admin",))
                   for d in deps if _in(d, ("litegate.cli",)))
    assert wrong == []


def test_tests_import_helpers_not_other_test_modules():
    """What several test modules share lives in tests/helpers/ (or a conftest)."""
    wrong = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{path.relative_to(ROOT)} -> {n}" for n in names
                      if n.startswith("tests.") and n.rpartition(".")[2].startswith("test_")]
    assert sorted(wrong) == []

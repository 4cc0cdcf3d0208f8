"""The structure is part of the product: imports point down only, and no module imports loop."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "aiguard"

# Lower layers first; a module may import its own layer and those before it.
LAYERS: list[set[str]] = [
    {"_errors", "_types", "_messages", "_semconv", "_version"},
    {
        "_policy",
        "_budget",
        "_breaker",
        "_output",
        "_quality_spec",
        "_store",
        "_redis",
        "_redis_scripts",
        "_ratelimit",
    },
    {
        "prices",
        "_patterns",
        "_detect",
        "checks",
        "_telemetry",
        "_capture",
        "_http",
        "_jsonl",
        "_pretty",
        "_calls",
        "_evaluation",
        "_worker",
        "_online",
        "_review",
        "evaluators",
    },
    {"_engine"},
    {"adapters"},
    {
        "_wrap",
        "_decorator",
        "_instrument",
        "_config",
        "_exporters",
        "_policy_file",
        "_policy_schema",
        "_policy_quality",
        "_toml_lines",
        "_classify",
    },
    {
        "_cli",
        "_report_read",
        "_report",
        "testing",
        "__init__",
        "__main__",
        "_report_html",
        "_svg",
        "_serve",
        "_review_cli",
        "_report_quality",
        "_report_print",
    },
]


# Imports of a higher layer made at call time, each for a reason.
ALLOWED_UPWARD = {
    # Policy.build("name") looks the name up in the policy file (wrap and guard do not).
    ("aiguard._policy", "aiguard._policy_file"),
}


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"aiguard.{name} is in no layer of tests/test_layers.py: add it")


def _imports(path: Path, module_level: bool = False) -> list[str]:
    """The aiguard modules a file imports (top-level and inside functions, typing-only too;
    ``module_level``: only those run when the module is imported)."""
    found = []
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aiguard"):
            found.append(node.module)
            if node.module == "aiguard":
                found += [f"aiguard.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("aiguard")]
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_imports_point_down_only():
    upward = []
    for name, path in _modules().items():
        here = _layer(_top(name))
        for imported in _imports(path):
            if _top(imported) in ("__init__",) or imported == "aiguard":
                continue
            if _layer(_top(imported)) > here and (name, imported) not in ALLOWED_UPWARD:
                upward.append(f"{name} imports {imported}")
    assert not upward, upward


def test_the_engine_knows_no_provider_and_no_entry_point():
    for name, path in _modules().items():
        if name.startswith("aiguard._engine"):
            for imported in _imports(path):
                assert _top(imported) not in ("adapters", "_wrap", "_decorator", "_policy_file"), (
                    f"{name} imports {imported}"
                )


def test_no_import_cycle():
    """No cycle among the imports that run when a module is imported."""
    modules = _modules()
    graph = {
        name: {i for i in _imports(path, module_level=True) if i in modules and i != name}
        for name, path in modules.items()
        if name != "aiguard"  # the package's lazy re-exports point at everything
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == "aiguard" or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])

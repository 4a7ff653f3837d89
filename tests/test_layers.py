"""The package's layering (docs/architecture.md): imports only go down, and no two modules import each other.

Every ``import``/``from ... import`` of a posttrain module, at module level or inside a function, is an edge; a
module's layer comes from its path. An edge from a lower layer to a higher one, or any import cycle, fails here
with the modules and line named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "posttrain"

LAYERS = [  # bottom first; a module may import its own layer and the ones before it
    ("errors", "io_utils", "losses", "attention", "plots", "version", "distributed", "registry"),
    ("config",),
    ("scoring",),
    ("models",),
    ("tasks", "data"),
    ("methods",),
    ("training_args", "checkpointing", "callbacks", "best_weights", "run_data", "run_meta", "support", "engine", "dry_run"),
    ("generation",),
    ("pipelines",),
    ("evaluation", "stepgame", "quickstart", "api", "export", "hub"),
    ("cli", "__main__", "__init__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def layer_of(module: str) -> int:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if first in names:
            return rank
    raise AssertionError(f"{module}: no layer declared for '{first}' (add it to LAYERS and docs/architecture.md)")


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported posttrain module, line) for every import statement of ``source``, the text of ``module``."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found += [(t, node.lineno) for t in (names or [target]) if t.startswith("posttrain")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("posttrain")]
    return [(t, line) for t, line in found if t != module]


EDGES = {m: imports_in(p.read_text(encoding="utf-8"), m, p.name == "__init__.py") for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    upward = [f"{module}:{line} imports {target} (layer {layer_of(target)} > {layer_of(module)})"
              for target, line in EDGES[module] if target in MODULES and layer_of(target) > layer_of(module)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    """Depth-first search over the import graph; a back edge is a cycle."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for target, _ in EDGES[module]:
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_the_edge_finder_reads_imports_inside_functions():
    """So the tests above can fail: a relative import inside a function, of a module or of a name, is an edge."""
    source = "import os\n\ndef f():\n    from ..engine import train\n    from .. import models\n"
    assert imports_in(source, "posttrain.methods.x") == [("posttrain.engine", 4), ("posttrain.models", 5)]
    assert layer_of("posttrain.engine") > layer_of("posttrain.methods.x")

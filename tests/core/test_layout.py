"""The package layout stays as docs/architecture.md draws it: no import cycles (lazy imports
inside functions included), and no private name imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hepflow"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported hepflow module, name)} for every import anywhere in the module."""
    modules = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    found: dict[str, set[tuple[str, str]]] = {m: set() for m in modules}
    for m, p in modules.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hepflow"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found[m].add((sub if sub in modules else node.module, alias.name))
            elif isinstance(node, ast.Import):
                found[m].update((a.name, "") for a in node.names if a.name in modules)
    return found


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in deps if t != m} for m, deps in _imports().items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = [*path[path.index(t) :], t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_private_name_is_imported_from_another_module() -> None:
    private = sorted(
        f"{m} imports {t}.{name}"
        for m, deps in _imports().items()
        for t, name in deps
        if name.startswith("_") and not name.startswith("__") and t != m
    )
    assert private == []


def test_test_references_in_the_docs_exist() -> None:
    """Every ``tests/...py::test_name`` the README and docs/ cite (docs/failures.md cites one per
    failure mode) names an existing test."""
    import re

    root = PACKAGE.parent
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted(root.glob("analyses/*/*.md"))]
    missing = []
    for doc in texts:
        for ref in set(re.findall(r"tests/[\w/]+\.py(?:::\w+)?", doc.read_text())):
            path, _, name = ref.partition("::")
            source = root / path
            if not source.is_file() or (name and not re.search(rf"def {name}\b", source.read_text())):
                missing.append(f"{doc.name}: {ref}")
    assert missing == []

"""The shape of the packages, from their imports (every import, those inside functions included): segdata knows no
data set and no model, cityscapes no model, and no two files import each other, directly or around a circle."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("segdata", "cityscapes", "deeplabv3plus")
LAYERS = {"segdata": set(), "cityscapes": {"segdata"}, "deeplabv3plus": {"segdata", "cityscapes"}}
"""What each package may import of the others."""


def module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_of(path): path for package in PACKAGES for path in sorted((REPO / package).glob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (``from package import module`` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {module: imports_of(path, modules) - {module} for module, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph[node]:
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, what it imports) for every import of a package that LAYERS does not allow."""
    return sorted((module, imported) for module, imported_modules in graph.items() for imported in imported_modules
                  if imported.split(".")[0] != module.split(".")[0]
                  and imported.split(".")[0] not in LAYERS[module.split(".")[0]])


def test_each_package_imports_only_the_packages_below_it():
    assert upward_imports(import_graph()) == []


def test_no_circle_of_imports():
    assert circles(import_graph()) == []


def test_the_checks_catch_what_they_are_for():
    """A planted circle and a planted upward import are found (the test above cannot pass for want of edges)."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    planted = {**import_graph(), "segdata.planted": {"cityscapes.labels", "segdata.classes"}}
    assert upward_imports(planted) == [("segdata.planted", "cityscapes.labels")]
    graph = import_graph()
    assert "segdata.classes" in graph["deeplabv3plus.datasets"] and "cityscapes.kind" in graph["deeplabv3plus.datasets"]
    assert "cityscapes.synthetic_scenes" in graph["cityscapes.synthetic_layouts"]
    assert set(graph) == set(project_modules()) and len(graph) > 55  # every file of the three packages is a node

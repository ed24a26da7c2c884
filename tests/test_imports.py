"""The package's imports point one way: no circle among vit/ modules, and the lower floors
(checkpoint, data, model, images, preprocess) import nothing above them.

Read from the source with `ast`, so an import inside a function (the lazy ones that keep start-up
quick) counts as much as one at the top of a file: it is still an arrow between two modules."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vit"
# The floor every other module stands on: files, tensors and the scratch model; no registry, no serving.
LOWER = ("vit.checkpoint", "vit.data", "vit.model", "vit.images", "vit.preprocess")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(package.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The vit modules `path` imports anywhere in the file (top level, functions, TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from vit import families` names a module; `from vit.explain import blur` names its package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # vit.explain.maps.x -> vit.explain.maps
                target = target.rpartition(".")[0]
            if target and target != name and target != "vit":
                out.add(target)
    return out


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imported(path, set(found)) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_top_level_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "vit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vit import b\n")
    (pkg / "b.py").write_text("def f():\n    from vit.sub.c import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import thing\n")
    (pkg / "sub" / "c.py").write_text("import vit.a\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        edges = graph(pkg)
    finally:
        ROOT = saved
    assert edges == {"vit": set(), "vit.a": {"vit.b"}, "vit.b": {"vit.sub.c"}, "vit.sub": {"vit.sub.c"},
                     "vit.sub.c": {"vit.a"}}
    assert circles(edges) == [["vit.a", "vit.b", "vit.sub.c"]]


def test_no_import_circles_among_vit_modules():
    found = circles(graph())
    assert not found, "import circles (each list imports itself round the loop): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("lower", LOWER)
def test_the_lower_floors_import_nothing_above_them(lower):
    edges = graph()
    up = sorted(edges[lower] - set(LOWER))
    assert not up, f"{lower} imports {up}, which stand above it (allowed: {LOWER})"

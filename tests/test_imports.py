"""The package's imports point one way, down its layers of subpackages, and its folders stay readable.

Read from the source with `ast`, so an import inside a function (the lazy ones that keep start-up
quick) or under TYPE_CHECKING counts as much as one at the top of a file: it is still an arrow between
two modules. Rooms are vit's subpackages (and any module at vit's top level) and app.py; a room's
floor is the length of the longest chain of rooms below it."""
import ast
import re
from functools import cache
from pathlib import Path

import vit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vit"
# Bottom to top (vit.LAYERS, the package's own statement of its layers), then app.py.
LAYERS = [tuple(f"vit.{name}" for name in layer) for layer in vit.LAYERS] + [("app.py",)]
SIDEWAYS = {("vit.explore", "vit.trust")}  # the explorer's mistakes carry the gate's calibrated probability
MAX_FLOORS, MAX_TOP_LEVEL, MAX_APP_LINES = 10, 8, 150
EXEMPT_NAMES = {"__init__", "__main__", "cli"}  # may repeat across subpackages; not counted at the top level


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


def room(module: str) -> str:
    """vit.explain.maps -> vit.explain; vit (the package itself) and app.py stay as they are."""
    return module if module == "app.py" else ".".join(module.split(".")[:2])


def room_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Arrows between rooms (an import inside one room is not an arrow), app.py's included."""
    edges = graph(package)
    edges["app.py"] = imported(ROOT / "app.py", set(edges))
    rooms: dict[str, set[str]] = {}
    for module, targets in edges.items():
        if module == "vit":
            continue
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if t != "vit" and room(t) != room(module))
    return rooms


def floors(rooms: dict[str, set[str]]) -> dict[str, int]:
    @cache
    def floor(r: str) -> int:
        return 1 + max((floor(t) for t in rooms.get(r, ())), default=0)

    return {r: floor(r) for r in rooms}


def layer_of(r: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if r in layer]
    assert found, f"{r} belongs to no layer: add it to LAYERS in tests/test_imports.py"
    return found[0]


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


def test_no_circles_among_the_rooms():
    found = circles(room_graph())
    assert not found, "rooms that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_arrow_points_down_the_layers():
    up = [f"{r} -> {t}" for r, targets in room_graph().items() for t in sorted(targets)
          if layer_of(t) > layer_of(r) or (layer_of(t) == layer_of(r) and (r, t) not in SIDEWAYS)]
    assert not up, f"imports that point up or sideways (layers, bottom to top: {LAYERS}): {up}"


def test_the_building_is_at_most_ten_floors():
    tall = floors(room_graph())
    assert max(tall.values()) <= MAX_FLOORS, sorted(tall.items(), key=lambda kv: -kv[1])


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.stem not in EXEMPT_NAMES:
            names.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    twins = {name: paths for name, paths in names.items() if len(paths) > 1}
    assert not twins, twins


def test_the_top_level_stays_small_and_the_app_thin():
    top = [p.name for p in PACKAGE.glob("*.py") if p.stem not in EXEMPT_NAMES]
    assert len(top) <= MAX_TOP_LEVEL, top
    lines = len((ROOT / "app.py").read_text().splitlines())
    assert lines <= MAX_APP_LINES, f"app.py has {lines} lines (wiring only: logic goes into vit.app)"


def test_the_layering_rules_catch_an_arrow_up(tmp_path):
    """The checks above on a made-up package whose models import the app: they must complain."""
    pkg = tmp_path / "vit"
    for sub in ("models", "app"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "zoo.py").write_text("def f():\n    from vit.app import ui\n")
    (pkg / "app" / "ui.py").write_text("from vit.models import zoo\n")
    (tmp_path / "app.py").write_text("from vit.app import ui\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        rooms = room_graph(pkg)
    finally:
        ROOT = saved
    assert rooms["vit.models"] == {"vit.app"} and circles(rooms) == [["vit.app", "vit.models"]]
    assert layer_of("vit.app") > layer_of("vit.models")


def lazy_imports_without_a_reason(path: Path) -> list[str]:
    """Function-level import blocks (consecutive import statements) whose first line gives no `# lazy:` reason."""
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        bodies = [b for node in ast.walk(fn) for b in (getattr(node, "body", None), getattr(node, "orelse", None),
                                                      getattr(node, "finalbody", None)) if isinstance(b, list)]
        for body in bodies:
            for before, st in zip([None, *body], body):
                starts_block = isinstance(st, (ast.Import, ast.ImportFrom)) and not isinstance(
                    before, (ast.Import, ast.ImportFrom))
                if starts_block and not re.search(r"#.*\blazy: \S", lines[st.lineno - 1]):
                    out.append(f"{path.relative_to(ROOT)}:{st.lineno}: {lines[st.lineno - 1].strip()}")
    return sorted(set(out))


def test_every_import_inside_a_function_says_what_it_saves():
    """An import inside a function is kept only when it buys start-up time or keeps a dependency optional,
    and its first line says which (`# lazy: ...`); anything else belongs at the top of the file."""
    found = [hit for path in [ROOT / "app.py", *sorted(PACKAGE.rglob("*.py"))] for hit in lazy_imports_without_a_reason(path)]
    assert not found, found


def test_the_lazy_import_check_sees_an_unexplained_one(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    import json\n    from os import path  # lazy: fine\n\n"
                                   "def g():\n    import timm  # lazy: seconds to import\n    import timm.data\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = lazy_imports_without_a_reason(tmp_path / "m.py")
    finally:
        ROOT = saved
    assert found == ["m.py:2: import json"]

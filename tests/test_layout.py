"""The architecture, checked on the source: no import circles, dependencies that point one way
(`bot -> model <- training`; `sandbox` imports no moodring code), and no database driver named outside the store.

Imports are read with `ast`, so this needs no package imported; an import under `if TYPE_CHECKING:` is not a
run-time dependency and does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "model", "training", "moodring", "sandbox")
#: What each top-level package may import of the others.
ALLOWED = {
    "bot": {"bot", "model"},
    "model": {"model"},
    "training": {"training", "model"},
    "moodring": {"moodring", "bot", "model", "training", "sandbox"},
    "sandbox": {"sandbox"},
}
DRIVERS = {"sqlite3", "aiosqlite", "asyncpg"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports at run time (anywhere in the file, outside TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known.keys()
            found.update(submodules)
            if len(submodules) < len(node.names) and target.split(".")[0] in PACKAGES:
                found.add(target)
    found.discard(name)
    return found


def test_no_import_circles() -> None:
    known = modules()
    graph = {name: imports(name, path, known) & known.keys() for name, path in known.items()}
    circles = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)


def test_dependencies_point_one_way() -> None:
    known = modules()
    wrong = [
        f"{name} imports {target}"
        for name, path in known.items()
        for target in sorted(imports(name, path, known))
        if target.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert not wrong, wrong


def test_no_module_outside_the_store_names_a_database_driver() -> None:
    """The store's callers see only its `StoreError`s (bot/store/errors.py), never sqlite3's or asyncpg's errors."""
    outside = []
    for name, path in modules().items():
        if name == "bot.store" or name.startswith("bot.store."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [node.id]
                if isinstance(node, ast.Name)
                else []
            )
            if any(word.split(".")[0] in DRIVERS for word in named):
                outside.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not outside, outside

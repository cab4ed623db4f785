"""The repository's shape: every module imports, no two dferclip modules import each other (even through
imports made inside functions: a cycle hidden in a function still ties two modules into one), and the shipped
description sets sit in the top-level descriptions/ while a user's saves land where git ignores them."""
import ast
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "dferclip"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, *, inside_functions: bool) -> set[str]:
    """The dferclip modules ``name`` imports: ``from x import y`` counts ``x``, and ``x.y`` when y is a module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if nested and not inside_functions:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[:len(package) - child.level + 1] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in child.names)
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return {m for m in found if m in MODULES and m != name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_the_cycle_finder_finds_a_knot_made_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    assert imported_modules("dferclip.weights.checkpoints", PACKAGE / "weights" / "checkpoints.py",
                            inside_functions=False) >= {"dferclip.weights.fetch", "dferclip.weights.formats"}


@pytest.mark.parametrize("inside_functions", [False, True], ids=["module-level", "with-function-level"])
def test_no_import_cycle_among_dferclip_modules(inside_functions):
    graph = {name: imported_modules(name, path, inside_functions=inside_functions) for name, path in MODULES.items()}
    assert sum(map(len, graph.values())) > 100  # the walk sees the package's imports
    assert import_cycles(graph) == []


def test_the_app_never_reaches_training():
    graph = {name: imported_modules(name, path, inside_functions=True) for name, path in MODULES.items()}
    reached, todo = set(), list(imported_modules("app", REPO / "app.py", inside_functions=True))
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert "dferclip.ui.workbench" in reached and "dferclip.predict" in reached
    assert sorted(m for m in reached if m.startswith("dferclip.training")) == []


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"dferclip.__main__"}))  # __main__ runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_imports_the_docs_show_work():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    lines = {line.strip() for page in pages for line in page.read_text(encoding="utf-8").splitlines()
             if line.strip().startswith(("from dferclip", "import dferclip"))}
    assert len(lines) >= 5
    for line in sorted(lines):
        exec(line.split("#")[0], {})  # an ImportError names the stale line


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json"))}


SAVE_TWICE = """
import dferclip
from dferclip.errors import DescriptionError
from dferclip.text.descriptions import list_description_sets, load_description_set, save_description_set
from dferclip.workbench import Workbench

wb = Workbench(dferclip.load_model("random:dferclip-tiny"))
rows = [[c, d + " again"] for c, ds in zip(wb.current.classes, wb.current.descriptions) for d in ds]
wb.edit_rows(rows)
print(wb.save("my-set"))
print(save_description_set(wb.current))  # the same name again: the first goes to .history
try:
    save_description_set(load_description_set("dferclip-official-dfew"))
except DescriptionError as e:
    print("refused:", e)
print(list_description_sets())
"""


def test_shipped_sets_are_in_descriptions_and_a_save_leaves_a_clone_clean(tmp_path):
    shipped = _digests(REPO / "descriptions")
    assert {"dferclip-official-dfew.json", "dferclip-official-ferv39k.json", "dferclip-official-mafw.json"} <= set(shipped)
    assert (REPO / "descriptions" / "README.md").is_file() and (REPO / "checkpoints" / "README.md").is_file()
    clone = tmp_path / "clone"  # what a visitor gets: the tracked descriptions/ and the real .gitignore
    shutil.copytree(REPO / "descriptions", clone / "descriptions", ignore=shutil.ignore_patterns("local"))
    shutil.copy(REPO / ".gitignore", clone)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(clone)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "clone"]):
        subprocess.run(git + args, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "DFERCLIP_DESCRIPTIONS"}  # the default folder
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", SAVE_TWICE], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved, again, refused, listed = proc.stdout.strip().splitlines()[-4:]
    assert Path(saved) == Path(again) == clone / "descriptions" / "local" / "my-set.json"
    assert (clone / "descriptions" / "local" / ".history" / "my-set.v1.json").is_file()
    assert refused.startswith("refused:") and "shipped set" in refused
    assert "'dferclip-official-dfew'" in listed and listed.endswith("'my-set']")  # shipped first, then the user's
    status = subprocess.run(git + ["status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == ""  # written, and ignored by git
    ignored = subprocess.run(git + ["status", "--porcelain", "--ignored"], capture_output=True, text=True).stdout
    assert "!! descriptions/local/" in ignored
    assert _digests(REPO / "descriptions") == shipped == _digests(clone / "descriptions")

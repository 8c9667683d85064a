"""The layers stay apart: `import cai_engine` loads no studio, database or model code, the studio
(ui/) talks to the engine only, and SQL lives in the store.

Dependencies point one way: ui → cai_engine, never back. The engine modules the studio imports
load neither torch (nor transformers, trl, ...) nor duckdb when imported: model code is imported
inside the functions that run models, and duckdb inside the store when it opens the file.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "cai_engine"
UI = ROOT / "ui"

# Loaded by the functions that need them, never by importing an engine module the studio uses.
MODEL_CODE = {"torch", "transformers", "trl", "datasets", "accelerate", "peft"}
HEAVY = MODEL_CODE | {"duckdb", "streamlit"}
# The engine's entry points besides what the studio imports (collected from ui/ below).
ENTRY_POINTS = ["cai_engine", "cai_engine.cli", "cai_engine.bundled"]


# -- reading imports from the source ------------------------------------------------------


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement; with `module_level`, only those that run when the module is
    imported (not inside functions, not under `if TYPE_CHECKING:`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if module_level:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from import_nodes(ast.Module(body=node.orelse, type_ignores=[]), True)
                continue
        yield from import_nodes(node, module_level)


@functools.cache
def imported_names(path: Path, module_level: bool = False) -> frozenset[str]:
    """Absolute names of what `path` imports: `from a.b import c` gives `a.b` and `a.b.c` (which
    may be a module). Relative imports are resolved."""
    package = module_name(path) if is_package(path) else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text(), str(path)), module_level):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
            continue
        base = node.module or ""
        if node.level:
            base = importlib.util.resolve_name("." * node.level + base, package)
        names.add(base)
        names |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
    return frozenset(names)


def top(name: str) -> str:
    return name.partition(".")[0]


ENGINE_FILES = {module_name(p): p for p in python_files(ENGINE)}


def studio_engine_imports() -> set[str]:
    """Every engine module some file under ui/ imports, at any level (pages import lazily too)."""
    found: set[str] = set()
    for path in python_files(UI):
        found |= {n for n in imported_names(path) if n in ENGINE_FILES}
    return found


def loaded_after(imports: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


# -- the checks ---------------------------------------------------------------------------


def test_the_studio_imports_engine_modules():
    """The collection below must see the pages' imports, or the next test checks nothing."""
    assert {"cai_engine.store", "cai_engine.jobs", "cai_engine.training.jobs"} <= (
        studio_engine_imports()
    )


def test_importing_what_the_studio_imports_loads_no_model_code_duckdb_or_streamlit():
    modules = sorted(set(ENTRY_POINTS) | studio_engine_imports())
    loaded = {top(m) for m in loaded_after(modules)}
    assert loaded & HEAVY == set(), f"importing {modules} loaded {sorted(loaded & HEAVY)}"


def test_only_the_store_imports_duckdb():
    offenders = [
        module
        for module, path in ENGINE_FILES.items()
        if "duckdb" in {top(n) for n in imported_names(path)}
        and not (module + ".").startswith("cai_engine.store.")
    ]
    assert offenders == []


def test_the_engine_never_imports_the_studio_streamlit_or_the_tests():
    offenders = {
        module: sorted(found)
        for module, path in ENGINE_FILES.items()
        if (found := {top(n) for n in imported_names(path)} & {"ui", "streamlit", "tests", "bench"})
    }
    assert offenders == {}


def test_the_studio_imports_no_database_or_model_code():
    offenders = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in python_files(UI)
        if (found := {top(n) for n in imported_names(path)} & (MODEL_CODE | {"duckdb", "tests"}))
    }
    assert offenders == {}


def test_no_import_cycles_among_engine_modules():
    """Module-level imports only: an import inside a function runs after every module loaded.

    Importing `a.b.c` also runs the `__init__` of `a` and `a.b`; those count, except the
    importer's own parent packages, which are already being imported when it runs.
    """
    graph: dict[str, set[str]] = {}
    for module, path in ENGINE_FILES.items():
        ancestors = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
        targets = set()
        for name in imported_names(path, module_level=True):
            parts = name.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        graph[module] = {t for t in targets if t in ENGINE_FILES} - ancestors

    cycles, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(" → ".join(c) for c in cycles)


# SQL as this code base writes it (in capitals, see cai_engine/store/), across lines.
SQL = re.compile(
    r"\b(SELECT\b.+?\bFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET"
    r"|(CREATE|DROP|ALTER)\s+(OR\s+REPLACE\s+)?(TEMP\w*\s+)?(TABLE|VIEW|INDEX|SEQUENCE|SCHEMA)"
    r"|COPY\b.+?\bTO|PRAGMA\s+\w+|ATTACH\s+\S+)\b",
    re.S,
)
DB_CALLS = {"execute", "executemany", "sql", "fetchall", "fetchone", "fetchdf", "fetch_df"}


def strings(tree: ast.AST) -> Iterator[str]:
    """Every string literal, whole: implicit concatenation is one literal already, and an
    f-string's literal parts are joined around its fields."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "{}".join(v.value if isinstance(v, ast.Constant) else "" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_no_ui_file_holds_sql_or_talks_to_the_database():
    offenders = []
    for path in python_files(UI):
        tree = ast.parse(path.read_text(), str(path))
        sql = [s for s in strings(tree) if SQL.search(s)]
        calls = [
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DB_CALLS
        ]
        if sql or calls:
            offenders.append((str(path.relative_to(ROOT)), sql[:3], calls[:3]))
    assert offenders == []

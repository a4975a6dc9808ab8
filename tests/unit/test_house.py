"""The house rules (../shared/ARCHITECTURE.md "Layout", "Rules"), checked on the code
itself so that breaking one fails the suite: the agent loads nothing of the manager,
only ctmanager/store/ holds SQL, no private name crosses a package, and the import
contracts in .importlinter hold."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ctmanager"
STORE = PACKAGE / "store"


def sources(under: Path = PACKAGE) -> Iterator[tuple[str, Path, ast.Module]]:
    """(path relative to the repo, path, parsed module) for every .py file under `under`."""
    for path in sorted(under.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield str(path.relative_to(ROOT)), path, ast.parse(path.read_text(), str(path))


# ---- a. ctagent loads nothing of the manager --------------------------------------

AGENT_MODULES = ("ctmanager.agent.cli", "ctmanager.agent.daemon", "ctmanager.agent.apply", "ctmanager.agent.drivers")
# ctagent runs on every HN as root: no SQLite, no store, no manager, no planner, no template parser, no ops CLI
NOT_IN_AGENT = ("sqlite3", "_sqlite3", "ctmanager.store", "ctmanager.manager", "ctmanager.reconcile",
                "ctmanager.dc.template", "ctmanager.cli")


def loaded_by(modules: tuple[str, ...]) -> list[str]:
    """Every module in sys.modules after importing `modules` in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def forbidden(loaded: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_the_agent_loads_nothing_of_the_manager() -> None:
    loaded = loaded_by(AGENT_MODULES)
    assert set(AGENT_MODULES) <= set(loaded)  # the check itself imported what it checks
    assert forbidden(loaded, NOT_IN_AGENT) == []


def test_the_agent_check_sees_a_forbidden_module() -> None:
    """The check above is not vacuous: a module that loads the store is caught."""
    assert "ctmanager.store" in forbidden(loaded_by(("ctmanager.store",)), NOT_IN_AGENT)


# ---- b. SQL and connections live in ctmanager/store/ only -------------------------

# Statement shapes, word-bounded and case-insensitive; [^;]* spans lines but not statements.
SQL = re.compile(r"\b(SELECT\b[^;]*?\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
                 r"|CREATE\s+(TEMP\s+|TEMPORARY\s+)?TABLE|PRAGMA\s+\w+)\b", re.IGNORECASE)
DRIVERS = ("sqlite3", "_sqlite3", "psycopg", "psycopg2")
# The store's handle and its statement methods: calling them outside the store is SQL outside it
STORE_CALLS = ("query", "one", "execute", "executemany")
STORE_ATTRS = ("db",)
STORE_NAMES = ("get_meta", "set_meta")

# (file, the finding as sql_findings() words it, without its line) -> why it is not SQL
# outside the store. Each entry must still match something (test_every_sql_exception_is_still_needed).
SQL_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("ctmanager/cli/loop.py", "passes.execute("): "manager.passes.execute() carries out a plan's actions over SSH",
    ("ctmanager/operations/base.py", "op.execute("): "an operation's execute() writes through the store's row "
                                                      "functions (check, then execute: operations/base.py)",
}


def text_of(node: ast.AST) -> str | None:
    """A string constant's text; an f-string's with {} for each placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def sql_findings(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if (text := text_of(node)) is not None:
            if m := SQL.search(text):
                yield f"line {node.lineno}: SQL text {m.group(0)[:40]!r}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DRIVERS:
                    yield f"line {node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in DRIVERS:
            yield f"line {node.lineno}: from {node.module} import"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in STORE_CALLS:
            yield f"line {node.lineno}: {ast.unparse(node.func)}("
        elif isinstance(node, ast.Attribute) and (node.attr in STORE_ATTRS or node.attr in STORE_NAMES):
            yield f"line {node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.Name) and node.id in STORE_NAMES:
            yield f"line {node.lineno}: {node.id}"
        elif isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] in STORE_NAMES:
            yield f"line {node.lineno}: import of {node.name}"


def sql_outside_the_store() -> list[tuple[str, str]]:
    return [(rel, finding) for rel, path, tree in sources() if not path.is_relative_to(STORE)
            for finding in sql_findings(tree)]


def without_line(finding: str) -> str:
    return finding.split(": ", 1)[1]


def test_no_sql_outside_the_store() -> None:
    found = [(rel, f) for rel, f in sql_outside_the_store() if (rel, without_line(f)) not in SQL_EXCEPTIONS]
    assert found == [], "SQL or a connection outside ctmanager/store/ (move it into a store function):\n" + \
        "\n".join(f"{rel}: {f}" for rel, f in found)


def test_every_sql_exception_is_still_needed() -> None:
    seen = {(rel, without_line(f)) for rel, f in sql_outside_the_store()}
    assert [e for e in SQL_EXCEPTIONS if e not in seen] == []


@pytest.mark.parametrize("code", [
    'q = "SELECT ctid FROM cts WHERE hostname = ?"',
    'q = f"SELECT {CT_COLUMNS} FROM cts WHERE rack = ?"',
    'q = """insert into events(kind) values (?)"""',
    'q = "UPDATE cts SET admst = ?"',
    'q = "delete from routes"',
    'q = "CREATE TABLE t (x)"',
    'q = "PRAGMA journal_mode=WAL"',
    "import sqlite3",
    "import psycopg",
    "from sqlite3 import connect",
    "store.db.commit()",
    "rows = store.query('x')",
    "row = store.one('x')",
    "store.execute('x')",
    "store.executemany('x', [])",
    "store.get_meta('template')",
    "from ..store.db import set_meta",
])
def test_the_sql_check_catches(code: str) -> None:
    assert list(sql_findings(ast.parse(code))) != []


@pytest.mark.parametrize("code", [
    'msg = "update the DNS records"',
    "r = dns.query.tcp(q, host)",  # an attribute named query that is not called
    "from .records import Change",
])
def test_the_sql_check_lets_pass(code: str) -> None:
    assert list(sql_findings(ast.parse(code))) == []


# ---- c. no private name crosses a package -----------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The package a module belongs to: itself for a package, else its parent."""
    path = ROOT.joinpath(*module.split("."))
    return module if path.is_dir() else module.rpartition(".")[0]


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(path: Path, tree: ast.Module) -> Iterator[str]:
    here = module_name(path)
    own = package_of(here)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if path.name == "__init__.py" else here.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = ".".join(p for p in (base, node.module) if p)
            else:
                source = node.module or ""
            if source.split(".")[0] != "ctmanager":
                continue
            for alias in node.names:
                # `from M import _x` (a name or a submodule of M) or `from M._m import x`: private to M's package
                if any(private(p) for p in [*source.split("."), alias.name]) and package_of(source) != own:
                    yield f"line {node.lineno}: from {source} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ctmanager" and any(private(p) for p in alias.name.split(".")) \
                        and package_of(alias.name) != own:
                    yield f"line {node.lineno}: import {alias.name}"


def test_no_private_name_is_imported_across_packages() -> None:
    found = [f"{rel}: {f}" for rel, path, tree in sources() for f in private_imports(path, tree)]
    assert found == [], "underscore names are private to their package; make it public or move it:\n" + \
        "\n".join(found)


@pytest.mark.parametrize(("file", "code", "caught"), [
    ("ctmanager/cli/x.py", "from ..store.db import _error", True),
    ("ctmanager/cli/x.py", "from ctmanager.store.db import _error", True),
    ("ctmanager/agent/drivers/x.py", "from ..apply import _lock", True),  # a subpackage is another package
    ("ctmanager/store/x.py", "from .db import _error", False),  # its own package
    ("ctmanager/store/__init__.py", "from .db import _error", False),
    ("ctmanager/render/x.py", "from .. import __version__", False),  # a dunder is not private
    ("ctmanager/cli/x.py", "from ..store.db import Store", False),
])
def test_the_private_import_check(file: str, code: str, caught: bool) -> None:
    assert bool(list(private_imports(ROOT / file, ast.parse(code)))) is caught


# ---- d. the import contracts -------------------------------------------------------

def test_the_import_contracts_hold() -> None:
    """.importlinter: the layers, and the agent's forbidden modules."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports}: not installed (it is in setup.cfg's test extra)"
    proc = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=300)  # ./.importlinter
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_one_digit_test_everywhere() -> None:
    """str.isdigit() is true of '²' and other scripts' digits: validate.is_digits is the one test."""
    found = [f"{rel}: line {node.lineno}" for rel, path, tree in sources() if path.name != "validate.py"
             for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in ("isdigit", "isnumeric",
                                                                                            "isdecimal")]
    assert found == [], "use ctmanager.validate.is_digits:\n" + "\n".join(found)


def test_numeric_cli_arguments_use_the_bounded_types() -> None:
    """argparse's type=int takes '٣' and -5 for a port, type=float takes 'nan': cli.common has bounded ones."""
    found = [f"{rel}: line {node.lineno}" for rel, path, tree in sources() for node in ast.walk(tree)
             if isinstance(node, ast.keyword) and node.arg == "type" and isinstance(node.value, ast.Name)
             and node.value.id in ("int", "float")]
    assert found == [], "use cli.common.integer_in / seconds_in / port:\n" + "\n".join(found)

"""The deterministic part of store/ reads no clock and no randomness (DESIGN.md, "Commands are deterministic").

Checked statically: the modules the apply runs (commands, rules, schema, state_machine, queries, failures,
civil, tariff, booking) and the pure read/compat helpers (booking_queries, compat) import no
clock, random, network or event-loop module, and their SQL uses no non-deterministic SQLite function
(random(), randomblob(), CURRENT_TIMESTAMP, 'now', ...).  store/auth.py, store/payments.py, store/demo.py
and store/db.py are proposer-side / I/O code and are deliberately not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

STORE = Path(__file__).resolve().parents[1] / "store"
PURE = [
    "commands.py", "rules.py", "schema.py", "state_machine.py", "queries.py", "failures.py", "civil.py",
    "tariff.py", "booking.py", "booking_queries.py", "compat.py",
]
FORBIDDEN_MODULES = {
    "time", "datetime", "random", "secrets", "uuid", "os", "socket", "trio", "trio_asyncio", "asyncio",
    "aiosqlite", "threading", "hashlib", "importlib", "actors", "gateway", "web",
}
FORBIDDEN_SQL = re.compile(
    r"random\s*\(|randomblob|current_(timestamp|date|time)|'now'|julianday|strftime|changes\s*\(|last_insert_rowid",
    re.IGNORECASE,
)


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    # Docstrings may name the forbidden functions (to forbid them); only code strings are SQL candidates.
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        found += [f"{path.name}:{node.lineno}: imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and FORBIDDEN_SQL.search(node.value):
            found.append(f"{path.name}:{node.lineno}: non-deterministic SQL in {node.value[:60]!r}")
    return found


@pytest.mark.parametrize("name", PURE)
def test_deterministic_store_module_is_pure(name: str) -> None:
    problems = _problems(STORE / name)
    assert not problems, "\n".join(problems)


def test_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Never random()."""\nimport time\nfrom secrets import token_hex\nQ = "INSERT INTO t VALUES (random())"\n'
    )
    joined = "\n".join(_problems(bad))
    assert "imports time" in joined and "imports secrets" in joined
    assert joined.count("non-deterministic SQL") == 1  # the query, not the docstring

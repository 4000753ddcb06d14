"""raft/ is a pure state machine: no event loop, no clock, no global randomness, no network, no threads,
and nothing else of ours (DESIGN.md, "The house").  Checked statically with `ast` on every file under raft/.

Allowed: the standard library's plain data and file tools (json, dataclasses, enum, typing, os, struct,
zlib, ...).  Randomness comes from an injected `random.Random`, so `random` may be imported only to name
that type: `import random` / `from random import Random` are allowed, but nothing else from the module
(`random.randint`, `random.seed`, `from random import choice`, `random.SystemRandom`, ...), and no
`random.Random(...)` is constructed inside raft/ (its unseeded form would read OS entropy).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAFT = ROOT / "raft"

# Top-level module names raft/ must never import.
FORBIDDEN = {
    # event loops, threads and processes
    "trio",
    "trio_asyncio",
    "asyncio",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "selectors",
    "subprocess",
    # network and RPC
    "socket",
    "grpclib",
    "aiosqlite",
    # clocks and randomness
    "time",
    "datetime",
    "secrets",
    "uuid",
    # dynamic imports would get around this test
    "importlib",
    # the rest of the house
    "actors",
    "store",
    "gateway",
    "web",
    "proto",
    "tests",
}
# Module attributes that read a clock or global randomness, as `module.attr`.
FORBIDDEN_ATTRS = {"os.urandom", "os.getrandom", "os.times"}
# Any attribute of these names, e.g. `time.monotonic()`, `datetime.now()`.
FORBIDDEN_MODULE_NAMES = {"time", "datetime"}
# The only name raft/ may take from `random`: the type of the injected generator.
RANDOM_TYPE = "Random"


def _raft_files() -> list[Path]:
    return sorted(p for p in RAFT.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            found += [f"{rel}:{node.lineno}: imports {a.name}" for a in node.names if a.name.startswith("random.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: stays inside raft/
                continue
            modules = [node.module or ""]
            if node.module == "random":
                found += [
                    f"{rel}:{node.lineno}: imports random.{a.name} (only random.{RANDOM_TYPE}, as a type)"
                    for a in node.names
                    if a.name != RANDOM_TYPE
                ]
        for module in modules:
            if module.split(".")[0] in FORBIDDEN:
                found.append(f"{rel}:{node.lineno}: imports {module}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if node.value.id in FORBIDDEN_MODULE_NAMES or dotted in FORBIDDEN_ATTRS:
                found.append(f"{rel}:{node.lineno}: uses {dotted}")
            elif node.value.id == "random" and node.attr != RANDOM_TYPE:
                found.append(f"{rel}:{node.lineno}: uses {dotted} (global random state)")
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == RANDOM_TYPE) or (
                isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                and f.value.id == "random" and f.attr == RANDOM_TYPE
            ):
                found.append(f"{rel}:{node.lineno}: constructs a Random (inject one instead)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append(f"{rel}:{node.lineno}: calls __import__")
    return found


def test_raft_exists() -> None:
    assert _raft_files(), "raft/ has no Python files"


@pytest.mark.parametrize("path", _raft_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_raft_module_is_pure(path: Path) -> None:
    problems = _violations(path)
    assert not problems, "raft/ must stay a pure state machine:\n" + "\n".join(problems)


def test_checker_catches_violations(tmp_path: Path) -> None:
    """The checker itself: each bad line below must be reported, the good ones not."""
    bad = tmp_path / "raft" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import trio\n"
        "import time as t\n"
        "from random import randint\n"
        "from datetime import datetime\n"
        "import os\n"
        "x = os.urandom(4)\n"
        "def f(random):\n"
        "    return random.random()\n"
        "from gateway import peer_codec\n"
        "from random import choice, Random\n"
        "rng = Random()\n"
    )
    good = tmp_path / "raft" / "good.py"
    good.write_text(
        "from __future__ import annotations\n"
        "import json, os, struct, zlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from random import Random\n"
        "import random\n"
        "from .types import Entry\n"
        "def g(rng: random.Random) -> None: ...\n"
        "def f(rng: Random) -> int:\n"
        "    return rng.randint(1, 2) + len(os.listdir('.'))\n"
    )
    bad_found = _violations(bad, tmp_path)
    assert _violations(good, tmp_path) == []
    joined = "\n".join(bad_found)
    for needle in ("imports trio", "imports time", "imports random", "imports datetime", "os.urandom",
                   "uses random.random", "imports gateway",
                   "imports random.choice", "constructs a Random"):
        assert needle in joined, f"{needle!r} not reported in:\n{joined}"

"""The committed generated code in proto/gen must be exactly what proto/*.proto generates."""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "proto" / "gen"
SCRIPT = ROOT / "scripts" / "gen_proto.py"


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    for module in ("grpc_tools", "betterproto.plugin"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not importable: install the dev extra (make setup) to check proto drift")

    fresh = tmp_path / "gen"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(fresh)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"scripts/gen_proto.py failed:\n{proc.stdout}{proc.stderr}"

    want, have = _tree(fresh), _tree(COMMITTED)
    problems: list[str] = []
    for name in sorted(want.keys() | have.keys()):
        if name not in have:
            problems.append(f"missing from proto/gen: {name}")
        elif name not in want:
            problems.append(f"stale file in proto/gen (no longer generated): {name}")
        elif want[name] != have[name]:
            problems.append(
                "".join(
                    difflib.unified_diff(
                        have[name].splitlines(keepends=True),
                        want[name].splitlines(keepends=True),
                        fromfile=f"committed/proto/gen/{name}",
                        tofile=f"generated/proto/gen/{name}",
                    )
                )
            )
    assert not problems, (
        "proto/gen is out of date with proto/*.proto; run `make proto` and commit the result.\n\n"
        + "\n".join(problems)
    )

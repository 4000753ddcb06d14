"""Shared pytest setup: no test reads or writes the developer's real CLI session (~/.config/railraft)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cli_session(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # `railraft login` saves its session; subprocesses inherit this variable, in-process calls read it.
    monkeypatch.setenv("RAILRAFT_SESSION_FILE", str(tmp_path_factory.mktemp("session") / "session.json"))
    monkeypatch.delenv("RAILRAFT_TOKEN", raising=False)

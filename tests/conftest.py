from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.fixtures"]


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own config and data dirs and no THAU_* settings."""
    for key in list(os.environ):
        if key.startswith("THAU_") or key in {"OLLAMA_HOST", "OPENAI_API_KEY"}:
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path

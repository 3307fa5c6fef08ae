from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.fixtures"]


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``<data dir>/models`` for the whole run: a packaged base (Gemma's 253 MB GGUF)
    is assembled and checked once, not once per test."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models_dir: Path) -> Path:
    """Each test gets its own config and data dirs and no THAU_* settings; only the
    assembled base models are shared."""
    for key in list(os.environ):
        if key.startswith("THAU_") or key in {"OLLAMA_HOST", "OPENAI_API_KEY"}:
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "data" / "thau").mkdir(parents=True)
    (tmp_path / "data" / "thau" / "models").symlink_to(shared_models_dir)
    return tmp_path

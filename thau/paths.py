"""Where THAU keeps its config and data (XDG dirs, overridable by THAU_* variables)."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """``$THAU_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/thau`` (``~/.config/thau``)."""
    if env := os.environ.get("THAU_CONFIG_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "thau"


def data_dir() -> Path:
    """``$THAU_DATA_DIR``, else ``$XDG_DATA_HOME/thau`` (``~/.local/share/thau``)."""
    if env := os.environ.get("THAU_DATA_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "thau"


def config_file() -> Path:
    return config_dir() / "config.toml"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

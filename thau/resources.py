"""Where the data that ships in the package lies: eval sets, seeds, presets, Modelfiles.

Read through the import system, so the same code works from a checkout (editable
install) and from a wheel installed anywhere.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from thau.errors import ThauError

# Data folders without ``__init__.py`` right under ``thau``, by their checkout folder: an
# editable install's import hook does not find such folders, a wheel's site-packages does.
_CHECKOUT_FOLDERS = {"thau.datasets": "datasets", "thau.modelfiles": "Modelfiles"}


@cache
def package_dir(package: str) -> Path:
    """The data folder ``package`` (``thau.datasets``, ``thau.train.presets``, ...).

    Found beside its parent package rather than imported: a data folder has no
    ``__init__.py``, and ``thau/train/presets/`` shares its name with ``presets.py``.
    """
    parent, _, child = package.rpartition(".")
    spec = importlib.util.find_spec(parent)
    bases = list(spec.submodule_search_locations or []) if spec else []
    candidates = [Path(base) / child for base in bases]
    if package in _CHECKOUT_FOLDERS:
        candidates.append(Path(__file__).resolve().parent.parent / _CHECKOUT_FOLDERS[package])
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ThauError(f"{package} is missing from this installation; reinstall THAU.")


def datasets_dir() -> Path:
    """The shipped data: ``seeds/``, ``eval/`` and ``tool_calling/``."""
    return package_dir("thau.datasets")


def eval_dir() -> Path:
    return datasets_dir() / "eval"


def presets_dir() -> Path:
    return package_dir("thau.train.presets")


def modelfiles_dir() -> Path:
    """The rendered Modelfiles shipped with the package (read-only)."""
    return package_dir("thau.modelfiles")


def shipped_adapters_dir() -> Path:
    """The GGUF LoRA adapters shipped with the package."""
    return package_dir("thau.chat.data")


def source_checkout() -> Path | None:
    """The repository root when THAU runs from a source checkout, else ``None``.

    Commands that rebuild shipped files (the dataset, the Modelfiles) write them back into
    a checkout, and into the data dir (or a path the user gives) when THAU is installed.
    """
    root = datasets_dir().parent
    return root if (root / "pyproject.toml").is_file() and (root / ".git").exists() else None

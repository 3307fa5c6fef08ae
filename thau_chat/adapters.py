"""Which LoRA adapter the embedded backend loads.

By default: the training service's promoted version when a service is set up in the data
dir for the same base (``thau-train init``), else the adapter shipped in the package for
a packaged base (``thau-135m``, ``thau-270m``), else none. ``--adapter shipped`` and
``--adapter none`` force those; any other value is a GGUF path. Only the service's JSON
files are read (no torch, no trainer), so the chat stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thau.chat.backends.embedded import default_adapter_path, default_model_path
from thau.errors import ModelNotFound, ThauError

SHIPPED = "shipped"
NONE = "none"
Source = Literal["promoted", "shipped", "given", "none"]


@dataclass(frozen=True)
class AdapterChoice:
    """The adapter to load (``path`` None: the base alone), where it comes from, and why
    a promoted version was passed over (``note``), when one was."""

    path: Path | None
    source: Source
    version: str | None = None  # the promoted version's name
    promoted_at: str | None = None  # ISO 8601, UTC
    note: str = ""

    @property
    def label(self) -> str:
        """``thau-135m-v3 (promoted 2026-05-01 12:00 UTC)``, ``thau-135m-lora.gguf
        (shipped)``, the path given, or ``none``."""
        if self.path is None:
            return NONE
        if self.source == "promoted":
            when = (self.promoted_at or "")[:16].replace("T", " ")
            return f"{self.version} (promoted {when} UTC)" if when else f"{self.version}"
        if self.source == "shipped":
            return f"{self.path.name} (shipped)"
        return str(self.path)


def _default_base() -> Path | None:
    try:
        return default_model_path()
    except ModelNotFound:
        return None


def _packaged_path(size: str) -> Path | None:
    """Where the packaged base of ``thau-<size>`` lives, when it is installed (found
    without assembling or hashing it: only compared with other paths here)."""
    from thau.base_models import BY_SIZE, packaged_file

    packaged = BY_SIZE.get(size)
    return packaged_file(packaged) if packaged else None


def shipped_adapter(base: Path | None) -> Path | None:
    """The adapter shipped for ``base`` (None: the default base): ``thau-<size>-lora.gguf``
    when ``base`` is the packaged base of that size."""
    if base is None:
        return default_adapter_path()
    from thau.base_models import BY_SIZE

    for size in BY_SIZE:
        packaged = _packaged_path(size)
        if packaged is not None and _same_file(base, packaged):
            return default_adapter_path(size)
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.expanduser().resolve() == b.expanduser().resolve()


def promoted_adapter(base: Path | None, data_dir: Path) -> AdapterChoice | None:
    """The GGUF of the service's current version when the service in ``data_dir`` trains
    ``base`` (None: the default base); ``None`` when there is no such service or version.
    A version that cannot be used comes back with its ``path`` None and a ``note``."""
    from thau.train_service_files import (
        ServiceConfig,
        ServicePaths,
        current_version,
        read_state,
        version_gguf,
    )

    paths = ServicePaths.in_data_dir(data_dir)
    if not paths.config.is_file():
        return None
    try:
        config = ServiceConfig.load(paths.config)
        version = current_version(read_state(paths))
        if version is not None:
            name, gguf = str(version["name"]), version_gguf(paths, version)
    except (ThauError, OSError, ValueError, TypeError, KeyError) as exc:
        why = f"the training service in {paths.root} is unreadable ({exc!r})"
        return AdapterChoice(None, "none", note=why)
    base = base or _default_base()
    # the service trains its base_gguf, else the packaged base of its size
    trains = Path(config.base_gguf) if config.base_gguf else _packaged_path(config.size)
    if version is None or base is None or trains is None or not _same_file(base, trains):
        return None
    if not gguf.is_file():
        why = f"{name} has no GGUF adapter ({gguf} is missing)"
        return AdapterChoice(None, "none", version=name, note=why)
    return AdapterChoice(gguf, "promoted", name, version.get("created"))


def choose_adapter(
    requested: str | None, base: Path | None, data_dir: Path, *, shipped: bool = True
) -> AdapterChoice:
    """The adapter for ``base`` (None: the default base): ``requested`` (a path,
    ``shipped`` or ``none``) when given, else the promoted version, else, with
    ``shipped``, the adapter shipped for that base, else none."""
    if requested == NONE:
        return AdapterChoice(None, "none")
    if requested == SHIPPED:
        forced = shipped_adapter(base)
        if forced is None:
            raise ModelNotFound(
                "No adapter ships for this base; pass --adapter PATH or --adapter none."
            )
        return AdapterChoice(forced, "shipped")
    if requested:
        return AdapterChoice(Path(requested).expanduser(), "given")
    promoted = promoted_adapter(base, data_dir)
    if promoted is not None and promoted.path is not None:
        return promoted
    note = promoted.note if promoted is not None else ""
    found = shipped_adapter(base) if shipped else None
    if found is not None:
        return AdapterChoice(found, "shipped", note=note)
    return AdapterChoice(None, "none", note=note)

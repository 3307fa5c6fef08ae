"""The training service's settings and where it keeps its files.

On the bottom floor (the standard library only): the chat reads the promoted version and
finds the queue through it without importing the training part.

On disk, in ``<data dir>/train_service/``::

    config.json      the service settings (``thau-train init``)
    queue.db         the examples (SQLite, WAL)
    state.json       the current version and the version counter (replaced atomically)
    history.jsonl    one line per cycle: what happened and why
    train.lock       held (flock) by the process running a cycle; holds its PID
    run.json         the running cycle (run id, PIDs), while one runs
    versions/<run>/  a version: adapter/, report.json, meta.json, adapter.gguf
    runs/<id>/       a cycle's work folder, removed when the cycle ends
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thau.errors import ConfigError
from thau.jsonl import write_json
from thau.paths import data_dir

SIZES = {
    "135m": "smollm2-135m",
    "270m": "gemma3-270m",
    "360m": "smollm2-360m",
    "0.5b": "qwen2.5-0.5b",
    "1b": "llama-3.2-1b",
    "1.1b": "tinyllama-1.1b",
    "1.5b": "qwen2.5-1.5b",
}


# -- settings ------------------------------------------------------------------------------
@dataclass
class ServiceConfig:
    """The service settings, kept as JSON in the service folder."""

    size: str = "135m"
    preset: str = SIZES["135m"]
    auto_train_interval_hours: float = 24.0
    min_new_examples: int = 50
    replay_ratio: float = 4.0  # replay examples per new example
    max_replay: int = 2000
    valid_size: int = 64  # validation examples sampled from the dataset's valid split
    regression_margin: float = 0.02  # how far a watched metric may fall before refusing
    dataset_dir: str | None = None  # None: the dataset shipped in the package
    eval_cases: str | None = None  # None: the shipped dev set
    holdout_cases: str | None = None  # the gate's second set; None: the shipped holdout set
    eval_limit: int | None = None
    base_gguf: str | None = None  # the base as GGUF for export/eval (None: the size's)
    # the LoRA (peft folder or GGUF) the first version trains from and must beat; None: base
    start_adapter: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)  # `thau-train run` flags
    ollama: bool = True  # register each promoted version where an Ollama server answers
    ollama_host: str | None = None
    seed: int = 0

    def base_path(self) -> str | None:
        """The base GGUF that export and eval use: ``base_gguf``, else the packaged base of
        this size (``thau-270m``: Gemma 3 270M); ``None``: the default base."""
        from thau.base_models import BY_SIZE, DEFAULT_BASE, packaged_base_path

        if self.base_gguf:
            return self.base_gguf
        packaged = BY_SIZE.get(self.size)
        if packaged is None or packaged.name == DEFAULT_BASE:
            return None
        return str(packaged_base_path(packaged.name))

    @classmethod
    def for_size(cls, size: str, **values: Any) -> ServiceConfig:
        if size not in SIZES:
            raise ConfigError(f"Unknown size {size!r}; pick one of {', '.join(SIZES)}.")
        return cls(size=size, preset=SIZES[size], **values)

    @classmethod
    def load(cls, path: Path) -> ServiceConfig:
        if not path.is_file():
            raise ConfigError(f"No training service here ({path}); run `thau-train init` first.")
        values = json.loads(path.read_text("utf-8"))
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{path}: unknown settings {', '.join(unknown)}.")
        return cls(**values)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


@dataclass(frozen=True)
class ServicePaths:
    """Where a service keeps its files."""

    root: Path

    @classmethod
    def default(cls) -> ServicePaths:
        return cls.in_data_dir(data_dir())

    @classmethod
    def in_data_dir(cls, folder: Path) -> ServicePaths:
        """The service of the data dir ``folder``."""
        return cls(Path(folder) / "train_service")

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def queue(self) -> Path:
        return self.root / "queue.db"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "train.lock"

    @property
    def active_run(self) -> Path:
        return self.root / "run.json"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(paths: ServicePaths) -> dict[str, Any]:
    """``state.json``: ``current`` (a number or None), ``last_number``, ``baseline``,
    ``versions`` (each version's ``meta.json``)."""
    if not paths.state.is_file():
        return {"current": None, "last_number": 0, "baseline": None, "versions": []}
    return json.loads(paths.state.read_text("utf-8"))


def current_version(state: dict[str, Any]) -> dict[str, Any] | None:
    """The promoted version's record in ``state``, or ``None`` before the first."""
    return next((v for v in state["versions"] if v["number"] == state["current"]), None)


def version_gguf(paths: ServicePaths, version: dict[str, Any]) -> Path:
    """Where a version keeps its adapter as a llama.cpp GGUF LoRA (it may be missing when
    the cycle's export step made none)."""
    name = (version.get("exported") or {}).get("gguf_adapter") or "adapter.gguf"
    return paths.versions / version["folder"] / name

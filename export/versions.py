"""Model versions ``thau-<size>-vN``: numbered monotonically per size, kept with their
eval metrics in ``versions.json`` in THAU's data dir.

The file is rewritten atomically (temporary file, fsync, ``os.replace``) under a file
lock, so two exports at once never take the same number or lose an entry. A number
is never reused: each size keeps the last number it handed out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thau.export.errors import ExportError
from thau.jsonl import write_json


@dataclass
class ModelVersion:
    """One exported model."""

    name: str  # thau-135m-v3
    size: str  # 135m
    number: int
    created: str  # ISO 8601, UTC
    base: str = ""
    adapter: str = ""
    adapter_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    ollama_host: str | None = None  # where it was created; None: only a command was printed


def versions_file() -> Path:
    """``versions.json`` in THAU's data dir (``$THAU_DATA_DIR`` or the XDG one)."""
    from thau.paths import data_dir

    return data_dir() / "versions.json"


def scalar_metrics(report: Any) -> dict[str, Any]:
    """The plain values of an eval report (``train.evaluate``'s JSON), tables left out."""
    if not isinstance(report, dict):
        raise ExportError("An eval report is a JSON object of metric names and values.")
    source = report.get("metrics", report)
    return {
        key: value
        for key, value in source.items()
        if isinstance(value, (int, float, str, bool)) or value is None
    }


class VersionRegistry:
    """Reads and appends ``versions.json``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or versions_file()

    def _lock(self) -> Any:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=60)

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"last": {}, "versions": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"{self.path} is not readable JSON ({exc}); fix or move it.") from exc
        data.setdefault("last", {})
        data.setdefault("versions", [])
        return data

    def _write(self, data: dict[str, Any]) -> None:
        write_json(self.path, data)

    def list(self, size: str | None = None) -> list[ModelVersion]:
        """Every recorded version (of ``size`` when given), oldest first."""
        with self._lock():
            data = self._read()
        found = [ModelVersion(**entry) for entry in data["versions"]]
        return [v for v in found if size is None or v.size == size]

    def record(self, size: str, **details: Any) -> ModelVersion:
        """Take the next number for ``size`` and store the version with ``details``."""
        with self._lock():
            data = self._read()
            taken = [v["number"] for v in data["versions"] if v["size"] == size]
            number = max([int(data["last"].get(size, 0)), *taken]) + 1
            version = ModelVersion(
                name=f"thau-{size}-v{number}",
                size=size,
                number=number,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                **details,
            )
            data["last"][size] = number
            data["versions"].append(asdict(version))
            self._write(data)
        return version

    def update(self, name: str, **changes: Any) -> ModelVersion:
        """Change fields of the version called ``name``."""
        with self._lock():
            data = self._read()
            for entry in data["versions"]:
                if entry["name"] == name:
                    entry.update(changes)
                    self._write(data)
                    return ModelVersion(**entry)
        raise ExportError(f"No version {name!r} in {self.path}; see `thau-export versions`.")


def format_versions(versions: list[ModelVersion]) -> str:
    """A plain table for ``thau-export versions``."""
    if not versions:
        return "No versions yet: `thau-export ollama --name thau-135m` makes the first."
    rows = [("NAME", "CREATED", "OLLAMA", "METRICS")]
    for v in versions:
        shown = ", ".join(
            f"{k}={val:.3f}" if isinstance(val, float) else f"{k}={val}"
            for k, val in v.metrics.items()
        )
        rows.append((v.name, v.created, v.ollama_host or "-", shown or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:3])]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    return "\n".join(lines)

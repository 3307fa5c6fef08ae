"""Conversations on disk: every chat is saved as JSON in ``data_dir/conversations``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thau.errors import ThauError
from thau.jsonl import write_json
from thau.prompt_format import Message


class Conversation:
    """Messages plus where they are saved."""

    def __init__(self, folder: Path, messages: list[Message] | None = None) -> None:
        self.folder = folder
        self.messages: list[Message] = messages or []
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        self.path = folder / f"{self.id}.json"
        self.system: str | None = None
        # who answered from message ``from`` on: backend, model, adapter, system prompt
        self.runs: list[dict[str, Any]] = []

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "system": self.system, "messages": self.messages, "runs": self.runs}

    def note_run(self, run: dict[str, Any]) -> None:
        """Record who answers the next messages, when it changed since the last record."""
        last = {k: v for k, v in self.runs[-1].items() if k != "from"} if self.runs else None
        if run != last:
            self.runs.append({"from": len(self.messages), **run})

    def run_at(self, index: int) -> dict[str, Any] | None:
        """Who wrote message ``index`` (the last record from at or before it), if known."""
        found = None
        for run in self.runs:
            start = run.get("from")
            if isinstance(start, int) and start <= index:
                found = {k: v for k, v in run.items() if k != "from"}
        return found

    def save(self, path: Path | None = None) -> Path:
        """Write atomically (temp file + rename); returns the path."""
        return write_json(path or self.path, self.to_json(), indent=1)

    @classmethod
    def load(cls, folder: Path, ref: str) -> Conversation:
        """Load from a path, or an id/prefix of a saved conversation."""
        path = resolve(folder, ref)
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ThauError(f"Cannot load conversation {path}: {exc}") from None
        messages = data.get("messages") if isinstance(data, dict) else data
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in messages
        ):
            raise ThauError(f"{path} is not a THAU conversation (expected a list of messages)")
        conv = cls(folder, messages)
        if isinstance(data, dict):
            conv.system = data.get("system")
            runs = data.get("runs")
            conv.runs = [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
            if data.get("id") and path.parent == folder:
                conv.id, conv.path = str(data["id"]), path
        return conv


def resolve(folder: Path, ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    matches = sorted(folder.glob(f"{ref}*.json")) if folder.is_dir() else []
    if matches:
        return matches[-1]
    raise ThauError(f"No conversation {ref!r} (not a file, nor an id in {folder}).")


def recent(folder: Path, limit: int = 10) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)[-limit:]

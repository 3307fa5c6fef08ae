"""The training queue: new examples in SQLite (WAL), deduplicated by a content hash.

An example is either ``{"instruction", "input"?, "output"}`` or ``{"messages": [...]}``
(THAU's chat format), plus optional ``metadata``. Both are stored as given and as the
chat messages training uses. Its status moves ``pending -> training -> trained`` (or
``rejected`` when the model trained on it was not promoted); a crash leaves ``training``
rows, which :meth:`ExampleStore.requeue_training` puts back to ``pending``.

It sits on the bottom floor (the standard library only) because the chat queues its
``/good`` and ``/fix`` corrections here too, through the same checks as the REST API.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thau.errors import ThauError

Status = Literal["pending", "training", "trained", "rejected"]
STATUSES: tuple[Status, ...] = ("pending", "training", "trained", "rejected")
ROLES = ("system", "user", "assistant", "tool")
MAX_TEXT = 20_000  # characters in one field
MAX_MESSAGES = 64  # messages in one example

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    instruction TEXT,
    input TEXT,
    output TEXT,
    messages TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    added_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    run_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS examples_status ON examples (status, id);
"""
_COLUMNS = "id, instruction, input, output, messages, metadata, added_at, status, run_id, note"


class InvalidExample(ThauError):
    """An example is neither ``{instruction, output}`` nor ``{messages}`` done right."""


@dataclass(frozen=True)
class Example:
    """One normalized example: its chat messages and, when given so, the instruction form."""

    messages: list[dict[str, Any]]
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical messages: equal content, equal hash."""
        text = json.dumps(self.messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredExample:
    """A row of the queue."""

    id: int
    example: Example
    added_at: float
    status: Status
    run_id: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        e = self.example
        return {
            "id": self.id,
            "instruction": e.instruction,
            "input": e.input,
            "output": e.output,
            "messages": e.messages,
            "metadata": e.metadata,
            "added_at": self.added_at,
            "status": self.status,
            "note": self.note,
        }


@dataclass
class AddResult:
    """What adding a batch did: new ids, and how many were already queued."""

    ids: list[int] = field(default_factory=list)
    duplicates: int = 0

    @property
    def added(self) -> int:
        return len(self.ids)


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidExample(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidExample(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _message(value: Any, index: int) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidExample(f"messages[{index}] must be an object")
    role = value.get("role")
    if role not in ROLES:
        raise InvalidExample(f"messages[{index}].role must be one of {', '.join(ROLES)}")
    content = value.get("content")
    calls = value.get("tool_calls")
    if content is None and calls:
        content = ""
    _text(content, f"messages[{index}].content", required=not calls)
    out: dict[str, Any] = {"role": role, "content": content}
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise InvalidExample(f"messages[{index}].tool_calls: a list, on assistant messages")
        for call in calls:
            if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
                raise InvalidExample(f"messages[{index}].tool_calls: each call needs a name")
            if not isinstance(call.get("arguments", {}), Mapping):
                raise InvalidExample(f"messages[{index}].tool_calls: arguments is an object")
        out["tool_calls"] = [
            {"name": c["name"], "arguments": dict(c.get("arguments") or {})} for c in calls
        ]
    if role == "tool" and isinstance(value.get("tool_name"), str):
        out["tool_name"] = value["tool_name"]
    return out


def normalize(record: Any) -> Example:
    """Check one record and turn it into an :class:`Example` (raises :class:`InvalidExample`)."""
    if not isinstance(record, Mapping):
        raise InvalidExample("an example must be a JSON object")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidExample("metadata must be an object")
    metadata = json.loads(json.dumps(metadata))  # plain JSON values only
    if "messages" in record:
        if "instruction" in record or "output" in record:
            raise InvalidExample("give either messages or instruction/output, not both")
        raw = record["messages"]
        if not isinstance(raw, list) or not raw:
            raise InvalidExample("messages must be a non-empty list")
        if len(raw) > MAX_MESSAGES:
            raise InvalidExample(f"an example has at most {MAX_MESSAGES} messages")
        messages = [_message(m, i) for i, m in enumerate(raw)]
        roles = [m["role"] for m in messages]
        if "user" not in roles:
            raise InvalidExample("messages need a user message")
        if roles[-1] != "assistant":
            raise InvalidExample("the last message must be the assistant's")
        if "system" in roles[1:]:
            raise InvalidExample("a system message may only come first")
        return Example(messages=messages, metadata=metadata)
    if "instruction" not in record or "output" not in record:
        raise InvalidExample("an example needs instruction and output, or messages")
    instruction = _text(record["instruction"], "instruction") or ""
    given = _text(record.get("input"), "input", required=False) or None
    output = _text(record["output"], "output") or ""
    user = f"{instruction}\n\n{given}" if given else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Example(messages, instruction, given, output, metadata)


def parse_jsonl(path: Path) -> tuple[list[Example], list[tuple[int, str]]]:
    """Every example of a JSONL file, and ``(line number, problem)`` for each bad line."""
    examples, errors = [], []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                examples.append(normalize(json.loads(line)))
            except json.JSONDecodeError as exc:  # kept going: every bad line is reported
                errors.append((number, f"not JSON: {exc.msg}"))
            except InvalidExample as exc:
                errors.append((number, str(exc)))
    return examples, errors


class ExampleStore:
    """The queue database; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[StoredExample]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM examples {where}", params).fetchall()
        return [_row(row) for row in rows]

    def add(self, example: Example) -> tuple[int, bool]:
        """Queue one example; returns its id and whether it is new (not a duplicate)."""
        result = self.add_many([example])
        if result.ids:
            return result.ids[0], True
        with self._lock:
            row = self._db.execute("SELECT id FROM examples WHERE hash = ?", (example.hash,))
            return int(row.fetchone()[0]), False

    def add_many(self, examples: Iterable[Example]) -> AddResult:
        """Queue examples in one transaction; duplicates (here or already queued) are skipped."""
        result = AddResult()
        now = time.time()
        with self._write() as db:
            for e in examples:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO examples (hash, instruction, input, output, messages,"
                    " metadata, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.hash,
                        e.instruction,
                        e.input,
                        e.output,
                        json.dumps(e.messages, ensure_ascii=False),
                        json.dumps(e.metadata, ensure_ascii=False),
                        now,
                    ),
                )
                if cursor.rowcount:
                    result.ids.append(int(cursor.lastrowid or 0))
                else:
                    result.duplicates += 1
        return result

    def counts(self) -> dict[str, int]:
        """How many examples have each status (every status present, zeros included)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM examples GROUP BY status")
            found = dict(rows.fetchall())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def select(self, status: Status, limit: int = 100, offset: int = 0) -> list[StoredExample]:
        """Examples with ``status``, oldest first."""
        return self._rows("WHERE status = ? ORDER BY id LIMIT ? OFFSET ?", (status, limit, offset))

    def claim(self, run_id: str) -> list[StoredExample]:
        """Move every pending example to ``training`` under ``run_id`` and return them."""
        with self._write() as db:
            db.execute(
                "UPDATE examples SET status = 'training', run_id = ? WHERE status = 'pending'",
                (run_id,),
            )
        return self._rows("WHERE run_id = ? AND status = 'training' ORDER BY id", (run_id,))

    def finish(self, run_id: str, status: Status, note: str | None = None) -> int:
        """Set the status of a run's ``training`` examples; returns how many changed."""
        run = None if status == "pending" else run_id
        with self._write() as db:
            cursor = db.execute(
                "UPDATE examples SET status = ?, note = ?, run_id = ?"
                " WHERE run_id = ? AND status = 'training'",
                (status, note, run, run_id),
            )
        return cursor.rowcount

    def requeue_training(self) -> int:
        """Crash recovery: every ``training`` example goes back to ``pending``."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE examples SET status = 'pending', run_id = NULL WHERE status = 'training'"
            )
        return cursor.rowcount


def _row(row: tuple[Any, ...]) -> StoredExample:
    id_, instruction, given, output, messages, metadata, added_at, status, run_id, note = row
    example = Example(json.loads(messages), instruction, given, output, json.loads(metadata))
    return StoredExample(int(id_), example, float(added_at), status, run_id, note)

"""A small SQLite cache of web search results, with a time to live."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class SearchCache:
    """``get``/``put`` JSON payloads by key; entries older than ``ttl_s`` are misses.

    A cache that cannot be read or written (a locked or corrupt file) never fails a
    search: it just misses.
    """

    def __init__(self, path: Path, ttl_s: float) -> None:
        self.path = path
        self.ttl_s = ttl_s

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=2)
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS results "
                "(key TEXT PRIMARY KEY, created REAL NOT NULL, payload TEXT NOT NULL)"
            )
            with db:
                yield db
        finally:
            db.close()

    def get(self, key: str) -> Any | None:
        if self.ttl_s <= 0:
            return None
        try:
            with self._db() as db:
                row = db.execute(
                    "SELECT payload FROM results WHERE key = ? AND created > ?",
                    (key, time.time() - self.ttl_s),
                ).fetchone()
            return json.loads(row[0]) if row else None
        except (sqlite3.Error, OSError, ValueError):
            return None

    def put(self, key: str, payload: Any) -> None:
        if self.ttl_s <= 0:
            return
        now = time.time()
        try:
            with self._db() as db:
                db.execute("DELETE FROM results WHERE created <= ?", (now - self.ttl_s,))
                db.execute(
                    "INSERT OR REPLACE INTO results (key, created, payload) VALUES (?, ?, ?)",
                    (key, now, json.dumps(payload, ensure_ascii=False)),
                )
        except (sqlite3.Error, OSError):
            pass

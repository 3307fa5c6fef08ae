"""JSON files written once and read back the same way everywhere: JSONL records and
atomic writes (temporary file, fsync, rename), so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thau.errors import ThauError


class JsonlError(ThauError, ValueError):
    """A JSONL line that is not a JSON object; the message names ``file:line``."""


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line; a line that is not JSON
    raises :class:`JsonlError`."""
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(f"{path}:{number}: not JSON ({exc.msg})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON object on each non-blank line of ``path``."""
    out = []
    for number, value in iter_jsonl(path):
        if not isinstance(value, dict):
            raise JsonlError(f"{path}:{number}: not a JSON object")
        out.append(value)
    return out


def dumps_jsonl(rows: Iterable[Any]) -> str:
    """One compact JSON value per line, UTF-8 kept as it is."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed
    to disk and renamed over ``path``; the folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, value: Any, indent: int = 2) -> Path:
    """``value`` as indented JSON, written atomically."""
    return atomic_write(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")

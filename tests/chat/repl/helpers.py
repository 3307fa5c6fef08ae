"""Drive the REPL in-process: scripted keys in, a recording rich console out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from tests.scripted import ScriptedBackend, make_registry
from thau.chat.backends import Selection
from thau.chat.config import Settings, load_settings
from thau.chat.repl import PromptReader, run_repl


@dataclass
class Chat:
    """One finished REPL run."""

    rc: int
    screen: str
    settings: Settings
    backends: list[ScriptedBackend] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.settings.data_dir / "conversations"

    def saved(self) -> list[dict[str, Any]]:
        """Every saved conversation, oldest first."""
        paths = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        return [json.loads(p.read_text("utf-8")) for p in paths]

    def messages(self) -> list[dict[str, Any]]:
        """The messages of the newest saved conversation."""
        return self.saved()[-1]["messages"]

    def requests(self) -> list[dict[str, Any]]:
        return [r for b in self.backends for r in b.requests]


def run_chat(
    keys: str,
    replies: Sequence[Sequence[Any]] = (),
    *,
    load: str | None = None,
    console: Console | None = None,
    create_selection: Callable[[Settings], Selection] | None = None,
    later: Sequence[str] = (),
    **overrides: Any,
) -> Chat:
    """Type ``keys`` into the REPL (``\\r`` is Enter) with a backend replaying ``replies``;
    each of ``later`` is typed 0.4 s after the one before (for what runs asynchronously)."""
    settings = load_settings(**overrides)
    console = console or Console(record=True, width=100, force_terminal=False, file=_Null())
    chat = Chat(0, "", settings)

    def scripted(s: Settings) -> Selection:
        backend = ScriptedBackend(replies, model=s.model or "thau-test")
        chat.backends.append(backend)
        return Selection(backend, f"Using scripted {backend.model}.")

    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        reader = _Reader(settings.data_dir / "history", input=pipe, output=DummyOutput())
        reader.pipe, reader.later = pipe, list(later)
        chat.rc = run_repl(
            settings,
            load,
            console=console,
            reader=reader,
            registry=make_registry(),
            create_selection=create_selection or scripted,
        )
    chat.screen = console.export_text() if console.record else ""
    return chat


class _Reader(PromptReader):
    """Types ``later`` once the first prompt is up, 0.3 s apart, so that asynchronous work
    (completion) sees its keys one by one, as from a person."""

    pipe: PipeInput
    later: list[str]

    def read(self) -> str:
        if self.later:
            keys, self.later = self.later, []
            threading.Thread(target=_type_later, args=(self.pipe, keys), daemon=True).start()
        return super().read()


def _type_later(pipe: PipeInput, keys: Sequence[str]) -> None:
    for text in keys:
        time.sleep(0.3)
        pipe.send_text(text)


class _Null:
    """A file that drops what is written (the console records it)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

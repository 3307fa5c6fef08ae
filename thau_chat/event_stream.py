"""``thau-chat --message TEXT --json-stream``: a turn as newline-delimited JSON events.

Each line is one JSON object, written and flushed as it happens, with an ``event`` key:

- ``start``: ``backend``, ``model``, ``adapter``, ``conversation`` (the file it is saved to);
- ``text``: ``text``, a piece of the answer as the model writes it;
- ``tool_started``: ``name``, ``arguments``, ``syntax`` (how the model wrote the call), as
  a call is about to run;
- ``tool_finished``: ``name``, ``arguments``, ``raw``, ``ok``, ``result`` or ``error``,
  ``elapsed_s``, ``full_result_path``; a malformed call has only this event;
- ``notice``: ``message``;
- last, always: ``turn_done`` (``error`` null) or ``error`` (``error`` says why), each with
  ``answer`` (the text after the last tool call), ``tool_calls`` (how many ran),
  ``timings`` (``total_s``, ``first_token_s``, ``steps`` and the backend's counters) and
  ``conversation``.

The exit status is as for ``--json``: 0, or 1 when the last event is ``error``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from thau.chat.agent import (
    AgentEvent,
    Notice,
    TextDelta,
    ToolFinished,
    ToolRequested,
    TurnDone,
)

_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_OBJECT = {"type": "object"}
_TIMINGS = {
    "type": "object",
    "properties": {
        "total_s": {"type": "number", "minimum": 0},
        "first_token_s": {"type": ["number", "null"], "minimum": 0},
        "steps": {"type": "integer", "minimum": 1},
    },
}
_LAST = {
    "error": _STR_OR_NULL,
    "answer": _STR,
    "tool_calls": {"type": "integer", "minimum": 0},
    "timings": _TIMINGS,
    "conversation": _STR_OR_NULL,
}


def _event(kind: str, /, **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"event": {"const": kind}, **properties},
        "required": ["event", *properties],
        "additionalProperties": False,
    }


EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "One line of thau-chat --json-stream",
    "oneOf": [
        _event("start", backend=_STR, model=_STR, adapter=_STR_OR_NULL, conversation=_STR),
        _event("text", text=_STR),
        _event("tool_started", name=_STR, arguments=_OBJECT, syntax=_STR),
        _event(
            "tool_finished",
            name=_STR,
            arguments={"type": ["object", "null"]},
            raw=_STR,
            ok={"type": "boolean"},
            result={},
            error=_STR_OR_NULL,
            elapsed_s={"type": "number", "minimum": 0},
            full_result_path=_STR_OR_NULL,
        ),
        _event("notice", message=_STR),
        _event("turn_done", **(_LAST | {"error": {"type": "null"}})),
        _event("error", **(_LAST | {"error": _STR})),
    ],
}
"""The JSON Schema every line matches (draft 2020-12)."""


def call_record(event: ToolFinished) -> dict[str, Any]:
    """A finished call as the one-shot's JSON outputs give it."""
    outcome = event.outcome
    return {
        "name": outcome.name,
        "arguments": getattr(event.call, "arguments", None),
        "raw": event.call.raw,
        "ok": outcome.ok,
        "result": outcome.result,
        "error": outcome.error,
        "elapsed_s": round(outcome.elapsed_s, 4),
        "full_result_path": str(event.full_result_path) if event.full_result_path else None,
    }


def turn_timings(done: TurnDone) -> dict[str, Any]:
    first = done.first_token_s
    return {
        "total_s": round(done.elapsed_s, 4),
        "first_token_s": None if first is None else round(first, 4),
        "steps": done.steps,
        **done.stats,
    }


def event_record(event: AgentEvent) -> dict[str, Any] | None:
    """The line for one agent event; ``None`` for those the stream leaves out (a call's
    tag being read, and the turn's end, which :meth:`EventStream.end` writes)."""
    if isinstance(event, TextDelta):
        return {"event": "text", "text": event.text}
    if isinstance(event, ToolRequested):
        call = event.call
        return {
            "event": "tool_started",
            "name": call.name,
            "arguments": call.arguments,
            "syntax": call.syntax,
        }
    if isinstance(event, ToolFinished):
        return {"event": "tool_finished", **call_record(event)}
    if isinstance(event, Notice):
        return {"event": "notice", "message": event.message}
    return None


class EventStream:
    """Writes the events of one turn to ``out``, one JSON line each, flushed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tool_calls = 0

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def start(self, backend: Any, conversation: Path) -> None:
        adapter = getattr(backend, "adapter_path", None)
        self.write(
            {
                "event": "start",
                "backend": backend.name,
                "model": backend.model,
                "adapter": str(adapter) if adapter else None,
                "conversation": str(conversation),
            }
        )

    def send(self, event: AgentEvent) -> None:
        record = event_record(event)
        if record is not None:
            self.tool_calls += record["event"] == "tool_finished"
            self.write(record)

    def end(
        self,
        *,
        error: str | None,
        answer: str = "",
        timings: dict[str, Any] | None = None,
        conversation: Path | None = None,
    ) -> None:
        """The last line: ``turn_done``, or ``error`` when ``error`` is set."""
        self.write(
            {
                "event": "error" if error else "turn_done",
                "error": error,
                "answer": answer,
                "tool_calls": self.tool_calls,
                "timings": timings or {},
                "conversation": str(conversation) if conversation else None,
            }
        )

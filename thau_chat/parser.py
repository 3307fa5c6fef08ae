"""Streaming parser for ``<TOOL:name>{json}</TOOL>`` calls.

Feed it text as it arrives; it returns events: text that is safe to show, the start
of a call, each complete call (as soon as its JSON body closes) and structured parse
errors. It never raises, and any chunking of the same stream gives the same events
(text may be split differently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import json_repair

from thau.prompt_format import TOOL_CLOSE, TOOL_OPEN

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")
_MAX_NAME = 64
_MAX_BODY = 1_000_000


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A tag ``<TOOL:name>`` was read; its body is streaming."""

    name: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: str
    repaired: bool = False
    closed: bool = True


@dataclass(frozen=True)
class ToolCallError:
    name: str
    raw: str
    error: str


Event = TextChunk | ToolCallStart | ToolCall | ToolCallError


def parse_body(name: str, body: str, *, closed: bool = True) -> ToolCall | ToolCallError:
    """Parse one call body, repairing near-JSON; never raises."""
    text = body.strip()
    if not text:
        return ToolCallError(name, body, "empty tool call body; expected a JSON object")
    try:
        value = json.loads(text)
        repaired = False
    except ValueError:
        try:
            value = json_repair.repair_json(text, return_objects=True)
        except Exception as exc:
            return ToolCallError(name, body, f"invalid JSON body: {exc}")
        repaired = True
    if not isinstance(value, dict) or (repaired and not value and text != "{}"):
        shown = text if len(text) <= 80 else text[:77] + "..."
        return ToolCallError(name, body, f"tool call body is not a JSON object: {shown}")
    return ToolCall(name, value, body, repaired=repaired, closed=closed)


class ToolCallParser:
    """Incremental state machine: TEXT -> NAME -> BODY -> AFTER -> TEXT."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._state = "text"
        self._held = ""  # text that may be the start of a tag
        self._name = ""
        self._body: list[str] = []
        self._body_len = 0
        self._depth = 0
        self._quote = ""
        self._escape = False
        self._started = False  # body's first non-space char seen
        self._braced = False  # body starts with "{"
        self._after = ""

    # -- public ---------------------------------------------------------------
    def feed(self, chunk: str) -> list[Event]:
        events: list[Event] = []
        if self._held:  # only ever set at the end of the previous chunk
            chunk, self._held = self._held + chunk, ""
        try:
            self._consume(chunk, events)
        except Exception as exc:  # defensive: the contract is "never raises"
            events.append(ToolCallError(self._name or "?", "", f"parser failure: {exc}"))
            self._reset()
        return events

    def close(self) -> list[Event]:
        """End of stream: flush text and finish an unclosed call."""
        events: list[Event] = []
        if self._state == "text" and self._held:
            events.append(TextChunk(self._held))
        elif self._state == "name":
            events.append(TextChunk(TOOL_OPEN + self._name))
        elif self._state == "body":
            events.append(parse_body(self._name, "".join(self._body), closed=False))
        elif self._state == "after":
            rest = self._after.lstrip()
            if not TOOL_CLOSE.startswith(rest):
                events.append(TextChunk(self._after))
        self._reset()
        return events

    @property
    def in_call(self) -> bool:
        """True while a tag or body is being read."""
        return self._state in ("name", "body")

    # -- states ---------------------------------------------------------------
    def _consume(self, s: str, events: list[Event]) -> None:
        i, n = 0, len(s)
        while i < n:
            state = self._state
            if state == "text":
                i = self._text(s, i, events)
            elif state == "name":
                i = self._read_name(s, i, events)
            elif state == "body":
                i = self._read_body(s, i, events)
            else:
                i = self._read_after(s, i, events)

    def _text(self, s: str, i: int, events: list[Event]) -> int:
        lt = s.find("<", i)
        if lt < 0:
            events.append(TextChunk(s[i:]))
            return len(s)
        if lt > i:
            events.append(TextChunk(s[i:lt]))
        rest = s[lt : lt + len(TOOL_OPEN)]
        if rest == TOOL_OPEN:
            self._state, self._name = "name", ""
            return lt + len(TOOL_OPEN)
        if TOOL_OPEN.startswith(rest):  # maybe a tag: wait for more text
            self._held = rest
            return len(s)
        events.append(TextChunk("<"))
        return lt + 1

    def _read_name(self, s: str, i: int, events: list[Event]) -> int:
        c = s[i]
        if c == ">" and self._name:
            self._state = "body"
            events.append(ToolCallStart(self._name))
            return i + 1
        allowed = _NAME_REST if self._name else _NAME_FIRST
        if c in allowed and len(self._name) < _MAX_NAME:
            self._name += c
            return i + 1
        # not a tag after all: show it as text and read c again as text
        events.append(TextChunk(TOOL_OPEN + self._name))
        self._state, self._name = "text", ""
        return i

    def _finish_body(self, events: list[Event], body: str) -> None:
        events.append(parse_body(self._name, body))
        self._body, self._body_len = [], 0
        self._depth, self._quote, self._escape = 0, "", False
        self._started = self._braced = False

    def _read_body(self, s: str, i: int, events: list[Event]) -> int:
        body = self._body
        n = len(s)
        while i < n:
            c = s[i]
            i += 1
            body.append(c)
            self._body_len += 1
            if c == ">" and self._body_len >= len(TOOL_CLOSE):
                joined = "".join(body)
                if joined.endswith(TOOL_CLOSE):  # closing tag inside an unbalanced body
                    self._finish_body(events, joined[: -len(TOOL_CLOSE)])
                    self._state, self._name = "text", ""
                    return i
            if not self._started:
                if c.isspace():
                    continue
                self._started, self._braced = True, c == "{"
            if not self._braced:
                continue
            if self._quote:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == self._quote:
                    self._quote = ""
            elif c in "\"'":
                self._quote = c
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self._finish_body(events, "".join(body))
                    self._state, self._after = "after", ""
                    return i
            if self._body_len > _MAX_BODY:
                self._finish_body(events, "".join(body))
                self._state, self._name = "text", ""
                return i
        return i

    def _read_after(self, s: str, i: int, events: list[Event]) -> int:
        c = s[i]
        candidate = (self._after + c).lstrip()
        if TOOL_CLOSE.startswith(candidate):
            self._after += c
            if candidate == TOOL_CLOSE:
                self._state, self._name, self._after = "text", "", ""
            return i + 1
        # no closing tag: what was buffered is text; read c again as text
        if self._after:
            events.append(TextChunk(self._after))
        self._state, self._name, self._after = "text", "", ""
        return i

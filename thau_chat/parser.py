"""Streaming parser for tool calls in a model's text.

Feed it text as it arrives; it returns events: text that is safe to show, the start
of a call, each complete call (as soon as it is complete) and structured parse errors.
It never raises, and any chunking of the same stream gives the same calls and the same
text (the text may be split differently).

It reads THAU's own syntax, ``<TOOL:name>{json}</TOOL>``, and (unless
``other_formats=False``) the formats other models were trained to write, so that any
model can be driven in text mode (:mod:`thau.chat.foreign_calls` reads their bodies):

- ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes, Qwen);
- a bare ``{"name": ..., "arguments"|"parameters": {...}}`` object;
- a fenced ```` ```json ```` block that holds one such object.

The rule that keeps a normal answer from being misread as a call:

- ``<TOOL:`` and ``<tool_call>`` tags are calls wherever they appear in text (never
  inside another call's body); THAU's adapters write only the first, so its syntax
  always wins.
- A bare object counts only when it is the *whole* reply (whitespace around it is
  allowed) and a fenced block only when it holds nothing but the object; in both the
  object must have exactly the call shape: the two keys ``name`` (a valid tool name) and
  ``arguments`` or ``parameters`` (an object). JSON with any other key, or a call-shaped
  object with text after it, is text: a person who asks for a JSON example gets it.
- The name need not be a registered tool: a call to an unknown name is passed on, and
  the agent reports it to the person and the model like any other bad call.

While a reply could still be such an object, its text is held back, and released as
text at the first character that rules it out: a first key that is not a call key, a
key or value that breaks the shape, or text after the object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from thau.chat import foreign_calls as foreign
from thau.chat.foreign_calls import HERMES_CLOSE, HERMES_OPEN, load_object
from thau.prompt_format import TOOL_CLOSE, TOOL_NAME, TOOL_OPEN

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")
_MAX_NAME = 64
_MAX_BODY = 1_000_000
_MAX_FENCE_LINE = 16
_MAX_KEY_TEXT = 64
_HERMES_NAME_FIRST = re.compile(rf'\s*\{{\s*"name"\s*:\s*"({TOOL_NAME})"')


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call's tag and name were read; its body is streaming."""

    name: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: str
    repaired: bool = False
    closed: bool = True
    syntax: str = "thau"
    """How the model wrote it: ``thau``, ``hermes``, ``json`` (bare object), ``fenced``,
    or ``native`` (the backend's tools API)."""


@dataclass(frozen=True)
class ToolCallError:
    name: str
    raw: str
    error: str


Event = TextChunk | ToolCallStart | ToolCall | ToolCallError


def parse_body(name: str, body: str, *, closed: bool = True) -> ToolCall | ToolCallError:
    """Parse one ``<TOOL:name>`` body, repairing near-JSON; never raises."""
    text = body.strip()
    if not text:
        return ToolCallError(name, body, "empty tool call body; expected a JSON object")
    value, repaired = load_object(text)
    if not isinstance(value, dict) or (repaired and not value and text != "{}"):
        shown = text if len(text) <= 80 else text[:77] + "..."
        return ToolCallError(name, body, f"tool call body is not a JSON object: {shown}")
    return ToolCall(name, value, body, repaired=repaired, closed=closed)


def parse_hermes(body: str, *, closed: bool = True) -> ToolCall | ToolCallError:
    """Parse one ``<tool_call>`` body; never raises."""
    found = foreign.hermes_call(body)
    if isinstance(found, foreign.BadCall):
        return ToolCallError(found.name, body, found.error)
    name, arguments, repaired = found
    return ToolCall(name, arguments, body, repaired=repaired, closed=closed, syntax="hermes")


class ToolCallParser:
    """Incremental state machine.

    THAU's tag: TEXT -> NAME -> BODY -> AFTER -> TEXT; ``<tool_call>``: TEXT -> BODY ->
    AFTER -> TEXT; a bare object or a json fence: TEXT -> [FENCE ->] JSON -> TEXT, its
    text held until it is a call or cannot be one.
    """

    def __init__(self, *, other_formats: bool = True) -> None:
        self.other_formats = other_formats
        self._openers = (TOOL_OPEN, HERMES_OPEN) if other_formats else (TOOL_OPEN,)
        self._at_start = True  # nothing but whitespace has been read
        self._line_start = True
        self._reset()

    def _reset(self) -> None:
        self._state = "text"
        self._pending = ""  # text at the end of a chunk that may be the start of a tag
        self._name = ""
        self._hermes = False  # the body is a <tool_call>'s
        self._announced = False
        self._body: list[str] = []
        self._body_len = 0
        self._depth = 0
        self._quote = ""
        self._escape = False
        self._started = False  # body's first non-space char seen
        self._braced = False  # body starts with "{"
        self._after = ""
        self._held: list[str] = []  # a bare object or json fence that may be a call
        self._held_len = 0
        self._fenced = False
        self._phase = ""  # lead -> key -> object -> trail
        self._object_at = 0
        self._key = ""
        self._ticks = 0
        self._found: foreign.Found | None = None

    # -- public ---------------------------------------------------------------
    def feed(self, chunk: str) -> list[Event]:
        events: list[Event] = []
        if self._pending:  # only ever set at the end of the previous chunk
            chunk, self._pending = self._pending + chunk, ""
        try:
            self._consume(chunk, events)
        except Exception as exc:  # defensive: the contract is "never raises"
            events.append(ToolCallError(self._name or "?", "", f"parser failure: {exc}"))
            self._reset()
        return events

    def close(self) -> list[Event]:
        """End of stream: flush text and finish an unclosed call."""
        events: list[Event] = []
        state = self._state
        if state == "text" and self._pending:
            events.append(TextChunk(self._pending))
        elif state == "name":
            events.append(TextChunk(TOOL_OPEN + self._name))
        elif state == "body":
            self._finish_body(events, "".join(self._body), closed=False)
        elif state == "after":
            rest = self._after.lstrip()
            close_tag = HERMES_CLOSE if self._hermes else TOOL_CLOSE
            if not close_tag.startswith(rest):
                events.append(TextChunk(self._after))
        elif self._phase == "trail" and self._found is not None:
            self._emit_found(events, closed=not self._fenced or self._ticks == 3)
        elif self._held:
            events.append(TextChunk("".join(self._held)))
        self._reset()
        self._at_start = self._line_start = True
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
            elif state == "after":
                i = self._read_after(s, i, events)
            elif state == "fence":
                i = self._read_fence_line(s, i, events)
            else:
                i = self._read_json(s, i, events)

    def _show(self, events: list[Event], text: str) -> None:
        if text:
            events.append(TextChunk(text))
            self._line_start = text.endswith("\n")
            if self._at_start and not text.isspace():
                self._at_start = False

    def _text(self, s: str, i: int, events: list[Event]) -> int:
        n = len(s)
        if self._at_start and self.other_formats:
            j = i
            while j < n and s[j].isspace():
                j += 1
            self._show(events, s[i:j])
            if j == n:
                return n
            if s[j] == "{":  # maybe a bare call object: the whole reply
                self._hold_json(fenced=False)
                return j
            self._at_start, i = False, j
        lt = s.find("<", i)
        fence = self._find_fence(s, i) if self.other_formats else -1
        stop = min(k for k in (lt, fence, n) if k >= 0)
        self._show(events, s[i:stop])
        if stop == n:
            return n
        self._at_start = False
        if stop == fence:
            self._state, self._held, self._held_len = "fence", [], 0
            return stop
        tail = s[lt:]
        for opener in self._openers:
            if tail.startswith(opener):
                if opener == TOOL_OPEN:
                    self._state, self._name = "name", ""
                else:
                    self._state, self._name, self._hermes = "body", "", True
                return lt + len(opener)
        if any(len(tail) < len(o) and o.startswith(tail) for o in self._openers):
            self._pending = tail  # maybe a tag: wait for more text
            return n
        self._show(events, "<")
        return lt + 1

    def _find_fence(self, s: str, i: int) -> int:
        """Where a backtick starts a line in ``s[i:]``, or -1."""
        if self._line_start and s.startswith("`", i):
            return i
        at = s.find("\n`", i)
        return at + 1 if at >= 0 else -1

    def _read_name(self, s: str, i: int, events: list[Event]) -> int:
        c = s[i]
        if c == ">" and self._name:
            self._state = "body"
            events.append(ToolCallStart(self._name))
            self._announced = True
            return i + 1
        allowed = _NAME_REST if self._name else _NAME_FIRST
        if c in allowed and len(self._name) < _MAX_NAME:
            self._name += c
            return i + 1
        # not a tag after all: show it as text and read c again as text
        self._show(events, TOOL_OPEN + self._name)
        self._state, self._name = "text", ""
        return i

    # -- call bodies ----------------------------------------------------------
    def _finish_body(self, events: list[Event], body: str, *, closed: bool = True) -> None:
        if self._hermes:
            event = parse_hermes(body, closed=closed)
            if isinstance(event, ToolCall) and not self._announced:
                events.append(ToolCallStart(event.name))
        else:
            event = parse_body(self._name, body, closed=closed)
        events.append(event)
        self._body, self._body_len = [], 0
        self._depth, self._quote, self._escape = 0, "", False
        self._started = self._braced = self._announced = False

    def _end_call(self) -> None:
        self._state, self._name, self._hermes, self._after = "text", "", False, ""
        self._line_start = False

    def _read_body(self, s: str, i: int, events: list[Event]) -> int:
        body = self._body
        close_tag = HERMES_CLOSE if self._hermes else TOOL_CLOSE
        n = len(s)
        while i < n:
            c = s[i]
            i += 1
            body.append(c)
            self._body_len += 1
            if c == ">" and self._body_len >= len(close_tag):
                joined = "".join(body)
                if joined.endswith(close_tag):  # closing tag inside an unbalanced body
                    self._finish_body(events, joined[: -len(close_tag)])
                    self._end_call()
                    return i
            if not self._started:
                if c.isspace():
                    continue
                self._started, self._braced = True, c == "{"
            if not self._braced:
                continue
            if self._object_done(c):
                self._finish_body(events, "".join(body))
                self._state, self._after = "after", ""
                return i
            if self._body_len > _MAX_BODY:
                self._finish_body(events, "".join(body))
                self._end_call()
                return i
        if self._hermes and not self._announced:
            self._announce_hermes(events)
        return i

    def _announce_hermes(self, events: list[Event]) -> None:
        """``ToolCallStart`` as soon as a ``<tool_call>`` body's first key gives the name."""
        if self._body_len > 200:
            return
        match = _HERMES_NAME_FIRST.match("".join(self._body))
        if match:
            events.append(ToolCallStart(match.group(1)))
            self._announced = True

    def _read_after(self, s: str, i: int, events: list[Event]) -> int:
        c = s[i]
        close_tag = HERMES_CLOSE if self._hermes else TOOL_CLOSE
        candidate = (self._after + c).lstrip()
        if close_tag.startswith(candidate):
            self._after += c
            if candidate == close_tag:
                self._end_call()
            return i + 1
        # no closing tag: what was buffered is text; read c again as text
        after = self._after
        self._end_call()
        self._show(events, after)
        return i

    # -- bare objects and json fences -----------------------------------------
    def _hold(self, c: str) -> None:
        self._held.append(c)
        self._held_len += 1

    def _release(self, events: list[Event]) -> None:
        """What was held is not a call: show it, and go on reading text."""
        held = "".join(self._held)
        self._held, self._held_len, self._found = [], 0, None
        self._state, self._phase = "text", ""
        self._show(events, held)
        self._at_start = False

    def _hold_json(self, *, fenced: bool) -> None:
        self._state, self._fenced = "json", fenced
        self._phase = "lead"
        self._object_at, self._key, self._ticks = self._held_len, "", 0
        self._depth, self._quote, self._escape = 0, "", False

    def _read_fence_line(self, s: str, i: int, events: list[Event]) -> int:
        """The line after a backtick at a line start: ```` ```json ```` holds a block."""
        c = s[i]
        line = "".join(self._held)
        if c == "\n" and foreign.fence_opens(line):
            self._hold(c)
            self._hold_json(fenced=True)
            return i + 1
        if c != "\n" and len(line) < _MAX_FENCE_LINE and foreign.fence_may_open(line + c):
            self._hold(c)
            return i + 1
        self._release(events)  # an ordinary line: read c again as text
        return i

    def _read_json(self, s: str, i: int, events: list[Event]) -> int:
        c = s[i]
        phase = self._phase
        if self._held_len > _MAX_BODY or len(self._key) > _MAX_KEY_TEXT:
            self._release(events)
            return i
        if phase == "lead":  # whitespace up to the object's "{"
            if c.isspace() and self._fenced:
                self._hold(c)
                return i + 1
            if c != "{":
                self._release(events)
                return i
            self._object_at = self._held_len
            self._hold(c)
            self._phase, self._depth = "key", 1
            return i + 1
        if phase == "key":  # up to the end of the first key: is it a call's?
            status = foreign.first_key_status(self._key + c)
            if status == "no":
                self._release(events)
                return i
            self._hold(c)
            self._key += c
            if status == "yes":
                self._phase = "object"
            return i + 1
        if phase == "object":
            self._hold(c)
            if self._object_done(c):
                self._found = foreign.call_shape("".join(self._held[self._object_at :]))
                if self._found is None:
                    self._release(events)
                else:
                    self._phase = "trail"
            return i + 1
        return self._read_trail(c, i, events)

    def _object_done(self, c: str) -> bool:
        """Track strings and nesting; True when ``c`` closes the object."""
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
            return self._depth <= 0
        return False

    def _read_trail(self, c: str, i: int, events: list[Event]) -> int:
        """After a call-shaped object: only whitespace (bare), or the closing fence."""
        if c.isspace() and not self._ticks:
            self._hold(c)
            return i + 1
        if self._fenced and c == "`":
            self._hold(c)
            self._ticks += 1
            if self._ticks == 3:
                self._emit_found(events, closed=True)
                self._held, self._held_len = [], 0
                self._state, self._phase, self._line_start = "text", "", False
            return i + 1
        self._release(events)
        return i

    def _emit_found(self, events: list[Event], *, closed: bool) -> None:
        assert self._found is not None
        name, arguments, repaired = self._found
        raw = "".join(self._held)
        syntax = "fenced" if self._fenced else "json"
        events.append(ToolCallStart(name))
        events.append(ToolCall(name, arguments, raw, repaired, closed, syntax))
        self._found = None

"""The tool-call formats that models other than THAU's were trained to write.

The streaming parser (:mod:`thau.chat.parser`) finds where such a call is; this module
decides what it says. Three shapes are read:

- Hermes/Qwen: ``<tool_call>{"name": "web_search", "arguments": {...}}</tool_call>``;
- a bare ``{"name": ..., "arguments": {...}}`` (or ``"parameters"``, as Llama writes it)
  object that is the whole reply;
- a fenced ```` ```json ```` block that holds one such object.

Inside ``<tool_call>`` tags the body is a call whatever it holds (the tag says so), and a
body that is not one is an error. The other two are plain JSON that a normal answer may
contain as well, so they count only when they have the *exact* call shape
(:func:`call_shape`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import json_repair

from thau.prompt_format import is_tool_name

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
HERMES_NAME = "tool_call"
"""The name a malformed ``<tool_call>`` is reported under when it names no tool."""

ARGUMENT_KEYS = ("arguments", "parameters")
CALL_KEYS = frozenset({"name", *ARGUMENT_KEYS})
FENCE_OPEN = re.compile(r"```[ \t]*json[ \t]*\r?", re.IGNORECASE)
FENCE_PARTIAL = re.compile(r"`{0,3}|```[ \t]*(?:j|js|jso|json[ \t]*\r?)?", re.IGNORECASE)
_MAX_KEY = 16

Found = tuple[str, dict[str, Any], bool]
"""``(name, arguments, repaired)`` of a call."""


@dataclass(frozen=True)
class BadCall:
    """A ``<tool_call>`` body that is not a call: the name to report it under, and why."""

    name: str
    error: str


def load_object(text: str) -> tuple[Any, bool]:
    """``text`` as JSON, repairing near-JSON; ``(value, repaired)``, ``(None, True)`` when
    nothing can be made of it."""
    try:
        return json.loads(text), False
    except ValueError:
        pass
    try:
        return json_repair.repair_json(text, return_objects=True), True
    except Exception:
        return None, True


def _arguments(value: Any) -> dict[str, Any] | None:
    """Arguments as an object; OpenAI-style arguments are a JSON string of one."""
    if isinstance(value, str):
        value, _ = load_object(value)
    return value if isinstance(value, dict) else None


def call_shape(text: str) -> Found | None:
    """The call in a bare or fenced JSON object, or None when it is not exactly one.

    Exactly one: an object with two keys, ``name`` (a tool name, ``[a-z_][a-z0-9_]*``)
    and ``arguments`` or ``parameters`` (an object). Any other key, or a name that cannot
    be a tool's, makes it ordinary JSON. The name need not be a registered tool: a call to
    an unknown name is reported by the agent, not dropped.
    """
    value, repaired = load_object(text)
    if not isinstance(value, dict) or len(value) != 2 or "name" not in value:
        return None
    key = next(k for k in value if k != "name")
    name = value["name"]
    if key not in ARGUMENT_KEYS or not isinstance(name, str) or not is_tool_name(name):
        return None
    arguments = _arguments(value[key])
    return None if arguments is None else (name, arguments, repaired)


def hermes_call(body: str) -> Found | BadCall:
    """The call in a ``<tool_call>`` body, or what is wrong with it."""
    text = body.strip()
    expected = 'expected {"name": ..., "arguments": {...}}'
    if not text:
        return BadCall(HERMES_NAME, f"empty <tool_call> body; {expected}")
    value, repaired = load_object(text)
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        value = value["function"]  # {"type": "function", "function": {...}}
    if not isinstance(value, dict) or (repaired and not value):
        shown = text if len(text) <= 80 else text[:77] + "..."
        return BadCall(HERMES_NAME, f"<tool_call> body is not a JSON object: {shown}")
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return BadCall(HERMES_NAME, f"<tool_call> names no tool; {expected}")
    if not is_tool_name(name):
        return BadCall(name, f"{name!r} is not a tool name (lower-case letters, digits and _)")
    raw: Any = next((value[k] for k in ARGUMENT_KEYS if k in value), {})
    arguments = _arguments(raw)
    if arguments is None:
        return BadCall(name, "the call's arguments are not a JSON object")
    return name, arguments, repaired


def first_key_status(text: str) -> Literal["yes", "no", "maybe"]:
    """Whether JSON text that follows an object's ``{`` starts with a call's key:
    ``"yes"``, ``"no"`` or ``"maybe"`` (not enough text yet)."""
    rest = text.lstrip()
    if not rest:
        return "maybe"
    quote, rest = rest[0], rest[1:]
    if quote not in "\"'":
        return "no"
    end = rest.find(quote)
    if end >= 0:
        return "yes" if rest[:end] in CALL_KEYS else "no"
    if len(rest) <= _MAX_KEY and any(key.startswith(rest) for key in CALL_KEYS):
        return "maybe"
    return "no"


def fence_may_open(line: str) -> bool:
    """Whether a line start that is not a whole line yet may still open a json block."""
    return FENCE_PARTIAL.fullmatch(line) is not None


def fence_opens(line: str) -> bool:
    """Whether a whole line (without its newline) opens a json block: ```` ```json ````."""
    return FENCE_OPEN.fullmatch(line) is not None

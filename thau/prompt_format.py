"""The one source of THAU's prompt format.

Training, evaluation, export (Modelfile SYSTEM/TEMPLATE) and the runtime all import
this module: the system prompt, how messages are rendered for the model's chat
template (ChatML, as SmolLM2 and Qwen2.5 use), the tool-call syntax and the
tool-result syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

TOOL_OPEN = "<TOOL:"
TOOL_CLOSE = "</TOOL>"
TOOL_NAME = r"[a-z_][a-z0-9_]*"  # the one tool-name rule: registry, parser, grammar, APIs
TOOL_NAME_RE = re.compile(TOOL_NAME)
TOOL_CALL_RE = re.compile(rf"<TOOL:({TOOL_NAME})>(.*?)(?:</TOOL>|$)", re.DOTALL)


def is_tool_name(name: str) -> bool:
    """Whether ``name`` can be written in a ``<TOOL:name>`` tag."""
    return TOOL_NAME_RE.fullmatch(name) is not None


def to_tool_name(text: str) -> str:
    """``text`` made a valid tool name: lower-cased, other characters to ``_``."""
    name = re.sub(r"[^a-z0-9_]", "_", text.lower())
    return name if name and not name[0].isdigit() else f"_{name}"


IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
STOP_SEQUENCES = [IM_END]


class Message(TypedDict):
    """One chat message as THAU stores and sends it."""

    role: str  # system | user | assistant | tool
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]  # native mode: [{"name", "arguments"}]
    tool_name: NotRequired[str]  # role tool: which tool answered


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """``<TOOL:name>{json}</TOOL>``."""
    return f"{TOOL_OPEN}{name}>{dumps(dict(arguments))}{TOOL_CLOSE}"


def format_tool_result(name: str, ok: bool, result: Any = None, error: str | None = None) -> str:
    """The content of a ``tool`` message."""
    if ok:
        return dumps({"tool": name, "ok": True, "result": result})
    return dumps({"tool": name, "ok": False, "error": error})


BASE_INTRO = (
    "You are THAU, a helpful assistant. Answer in the language the user writes in "
    "(Spanish or English)."
)

SHORT_RULES = (
    "Only when the user asks to create an image, run code or search the web, reply with "
    "<TOOL:name>{JSON arguments}</TOOL>; otherwise answer directly."
)

FULL_RULES = """\
You can use tools. Use one only when the user's request needs it; for greetings,
explanations, or questions you can answer yourself, reply directly without a tool.

To call a tool, write exactly one line of this form and then stop:
<TOOL:tool_name>{"argument": "value"}</TOOL>
The body is a single JSON object with the tool's arguments. Tool results come back
to you in a message with role "tool"; answer the user from them.

Example:
User: Draw a red fox in the snow
Assistant: <TOOL:generate_image>{"prompt": "a red fox standing in fresh snow, detailed, \
soft winter light"}</TOOL>"""


def _tool_lines(tools: Iterable[Any]) -> list[str]:
    lines = []
    for tool in tools:
        schema = dumps(tool.parameters())
        lines.append(f"- {tool.name}: {tool.description}\n  arguments: {schema}")
    return lines


def _required(tool: Any) -> str:
    names = [n for n, info in tool.args_model.model_fields.items() if info.is_required()]
    return f"{tool.name}({', '.join(names)})"


def system_prompt(tools: Sequence[Any], *, style: str = "short") -> str:
    """The system prompt describing ``tools`` (registry ``Tool`` objects).

    ``short`` is what the fine-tuned THAU models are trained and served with (they
    learn the tools, so it stays a few dozen tokens); ``full`` lists every JSON schema,
    for base models; ``native`` is for models driven through a backend's ``tools`` API.
    """
    if not tools:
        return BASE_INTRO
    if style == "native":
        return f"{BASE_INTRO} Use the provided tools only when the request needs them."
    if style == "full":
        listing = "\n".join(_tool_lines(tools))
        return f"{BASE_INTRO}\n\n{FULL_RULES}\n\nTools:\n{listing}"
    names = ", ".join(_required(tool) for tool in tools)
    return f"{BASE_INTRO} Tools: {names}. {SHORT_RULES} Image prompts are in English."


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message as the model sees it (native calls as text tags)."""
    content = message.get("content") or ""
    calls = message.get("tool_calls") or []
    if calls and TOOL_OPEN not in content:
        content += "".join(format_tool_call(c["name"], c.get("arguments") or {}) for c in calls)
    return content


def render_chatml(
    messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
) -> str:
    """Render messages in ChatML exactly as training does."""
    out = [f"{IM_START}{m['role']}\n{message_text(m)}{IM_END}\n" for m in messages]
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def assistant_spans(messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Character spans of ``render_chatml(messages, add_generation_prompt=False)``
    that are assistant output (content plus the closing ``<|im_end|>``): the tokens
    training puts loss on."""
    spans, pos = [], 0
    for m in messages:
        head = f"{IM_START}{m['role']}\n"
        body = f"{message_text(m)}{IM_END}"
        start = pos + len(head)
        if m["role"] == "assistant":
            spans.append((start, start + len(body)))
        pos = start + len(body) + 1
    return spans

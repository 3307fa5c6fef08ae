"""The one source of THAU's prompt format.

Training, evaluation, export (Modelfile SYSTEM/TEMPLATE) and the runtime all import
this module: the system prompt, how messages are rendered for the model's chat
template (ChatML, as SmolLM2 and Qwen2.5 use, or Gemma's turns, chosen per base), the
tool-call syntax and the tool-result syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class ChatTemplate:
    """How a base's chat turns are written: ``{start}{role}\n{text}{end}\n`` per message.

    ``roles`` renames THAU's roles where the base has its own words (Gemma's assistant is
    ``model``). ``bos``: the base wants its BOS token first; it is not in the text:
    llama.cpp and Ollama add it when tokenizing, the trainer puts it in front of the ids.
    """

    name: str
    start: str
    end: str
    roles: Mapping[str, str] = field(default_factory=dict)
    bos: bool = False

    def role(self, role: str) -> str:
        return self.roles.get(role, role)

    @property
    def stops(self) -> list[str]:
        """Where generation stops: the end of a turn, or the start of a new one."""
        return [self.end, self.start]


CHATML = ChatTemplate("chatml", IM_START, IM_END)
# Gemma's own turn markers (real special tokens of its vocabulary); its template knows only
# user and model turns, THAU adds system and tool turns written the same way
GEMMA = ChatTemplate("gemma", "<start_of_turn>", "<end_of_turn>", {"assistant": "model"}, True)
TEMPLATES = {t.name: t for t in (CHATML, GEMMA)}


def template_for(architecture: str | None) -> ChatTemplate:
    """The chat template of a base, from its GGUF ``general.architecture`` or its
    transformers ``model_type`` (``gemma3``, ``gemma3_text``: Gemma; else ChatML)."""
    return GEMMA if (architecture or "").lower().startswith("gemma") else CHATML


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


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    template: ChatTemplate = CHATML,
) -> str:
    """Render messages in ``template`` exactly as training does."""
    start, end = template.start, template.end
    out = [f"{start}{template.role(m['role'])}\n{message_text(m)}{end}\n" for m in messages]
    if add_generation_prompt:
        out.append(f"{start}{template.role('assistant')}\n")
    return "".join(out)


def render_chatml(
    messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
) -> str:
    """Render messages in ChatML exactly as training does."""
    return render_chat(messages, add_generation_prompt=add_generation_prompt)


def assistant_spans(
    messages: Sequence[Mapping[str, Any]], template: ChatTemplate = CHATML
) -> list[tuple[int, int]]:
    """Character spans of ``render_chat(messages, add_generation_prompt=False,
    template=template)`` that are assistant output (content plus the turn's closing
    marker): the tokens training puts loss on."""
    spans, pos = [], 0
    for m in messages:
        head = f"{template.start}{template.role(m['role'])}\n"
        body = f"{message_text(m)}{template.end}"
        start = pos + len(head)
        if m["role"] == "assistant":
            spans.append((start, start + len(body)))
        pos = start + len(body) + 1
    return spans

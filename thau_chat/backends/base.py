"""What every model backend provides."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from thau.prompt_format import Message


@dataclass
class GenerationOptions:
    temperature: float = 0.2
    num_ctx: int = 4096
    max_tokens: int | None = 1024
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    keep_alive: str | None = None
    grammar_tools: bool = False
    """Embedded only: constrain each tool-call body with a grammar from its schema."""
    native_messages: bool = False
    """Send history in the native tool-call shape even when no ``tools`` are offered
    (the final, tool-less step of a native-mode turn)."""
    tool_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Argument schemas by tool name, for ``grammar_tools``."""
    tool_gate: float | None = None
    """Embedded only: the confidence gate. ``None``: off and unmeasured; ``0``: measure
    each call's opening probability without refusing; ``p``: refuse openings below ``p``."""


@dataclass
class Chunk:
    """A piece of a streamed reply: text, native tool calls, or the final stats."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}]
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    model: str

    def describe(self) -> str:
        """One line: which backend, which model, where."""
        ...

    def prefers_native_tools(self) -> bool:
        """True when ``--tool-mode auto`` should use the backend's ``tools`` API."""
        ...

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        """Stream the assistant's reply. Raises ``BackendError`` subclasses."""
        ...


def is_thau_model(model: str) -> bool:
    """THAU's own fine-tuned models speak the text protocol."""
    return model.rsplit("/", 1)[-1].lower().startswith("thau")


def wire_messages(messages: Sequence[Message], *, native: bool) -> list[dict[str, Any]]:
    """Messages as server APIs take them (only the keys they know)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if native and m.get("tool_calls"):
            item["tool_calls"] = [
                {"function": {"name": c["name"], "arguments": c.get("arguments") or {}}}
                for c in m["tool_calls"]
            ]
        if m["role"] == "tool" and m.get("tool_name"):
            item["tool_name"] = m["tool_name"]
        out.append(item)
    return out

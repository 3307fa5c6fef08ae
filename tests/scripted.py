"""A scripted model backend and small tools for agent/CLI tests (no model needed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, Field

from thau.chat.backends.base import Chunk, GenerationOptions
from thau.prompt_format import Message
from thau.tools.registry import Tool, ToolContext, ToolRegistry


class ScriptedBackend:
    """Replays replies; each reply is a list of text chunks, ``Chunk``s or an exception."""

    name = "scripted"

    def __init__(self, replies: Sequence[Sequence[Any]], model: str = "thau-test") -> None:
        self.replies = [list(r) for r in replies]
        self.model = model
        self.requests: list[dict[str, Any]] = []

    def describe(self) -> str:
        return f"scripted ({self.model})"

    def prefers_native_tools(self) -> bool:
        return False

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        self.requests.append(
            {"messages": [dict(m) for m in messages], "tools": tools, "options": options}
        )
        reply = self.replies.pop(0) if self.replies else ["(no more replies)"]
        for item in reply:
            if isinstance(item, BaseException):
                raise item
            yield item if isinstance(item, Chunk) else Chunk(text=item)
        yield Chunk(done=True, stats={"eval_count": len(reply)})


class EchoArgs(BaseModel):
    text: str = Field(description="what to echo")
    times: int = Field(1, ge=1, le=3)


class NoArgs(BaseModel):
    pass


class SizeArgs(BaseModel):
    size: int = Field(ge=1)


def _boom(args: NoArgs, ctx: ToolContext) -> Any:
    raise RuntimeError("the tool broke")


def make_registry() -> ToolRegistry:
    """echo (plain), guarded (needs approval), boom (raises), big (huge result)."""
    return ToolRegistry(
        [
            Tool("echo", "Echo text back.", EchoArgs, lambda a, c: {"echo": a.text * a.times}),
            Tool(
                "guarded",
                "Needs approval.",
                EchoArgs,
                lambda a, c: {"ran": a.text, "approved": c.approved},
                needs_approval=True,
                preview=lambda a: ("python", a.text),
            ),
            Tool("boom", "Always raises.", NoArgs, _boom),
            Tool("big", "Returns size chars.", SizeArgs, lambda a, c: "x" * a.size),
        ]
    )

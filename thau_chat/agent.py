"""The agent loop: model, parse, approve, dispatch, feed back, repeat.

``Agent.run_turn`` is a generator of events, so every front end (REPL, one-shot,
JSON) shows the same thing. Closing the generator (Ctrl-C) keeps the conversation
consistent: whatever the model had said so far is kept as an interrupted reply.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from thau import prompt_format
from thau.chat.backends.base import Backend, GenerationOptions, is_thau_model
from thau.chat.backends.tool_gate import DEFAULT_THRESHOLD
from thau.chat.parser import TextChunk, ToolCall, ToolCallError, ToolCallParser, ToolCallStart
from thau.errors import ToolError
from thau.prompt_format import Message
from thau.tools.registry import Tool, ToolContext, ToolOutcome, ToolRegistry

FINAL_ANSWER_NOTE = (
    "The tool budget for this turn is used up. Answer the user now with what you have, "
    "without calling any tool."
)

YES_ANSWERS = frozenset({"y", "yes", "s", "si", "sí"})
"""What counts as yes when a person is asked to approve a tool (English and Spanish)."""


# -- events ---------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolStarted:
    """A call's tag was read; its arguments are still streaming (text mode)."""

    name: str


@dataclass(frozen=True)
class ToolRequested:
    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    call: ToolCall | ToolCallError
    outcome: ToolOutcome
    full_result_path: Path | None = None


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class TurnDone:
    steps: int
    elapsed_s: float
    first_token_s: float | None
    stats: dict[str, Any] = field(default_factory=dict)


AgentEvent = TextDelta | ToolStarted | ToolRequested | ToolFinished | Notice | TurnDone


@dataclass(frozen=True)
class Approval:
    approved: bool
    reason: str = ""


Approver = Callable[[ToolCall, Tool], Approval]


def deny_all(call: ToolCall, tool: Tool) -> Approval:
    return Approval(False, f"{tool.name} needs approval; run with --yes to allow it")


# -- the loop -----------------------------------------------------------------------
class Agent:
    def __init__(
        self,
        backend: Backend,
        registry: ToolRegistry,
        *,
        context: ToolContext,
        approver: Approver = deny_all,
        tool_mode: str = "text",
        tools_enabled: bool = True,
        max_steps: int = 5,
        system: str | None = None,
        options: GenerationOptions | None = None,
        auto_approve: bool = False,
        result_limit: int = 4000,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.context = context
        self.approver = approver
        self.tool_mode = tool_mode
        self.tools_enabled = tools_enabled
        self.max_steps = max_steps
        self.system_override = system
        self.options = options or GenerationOptions()
        self.auto_approve = auto_approve
        self.result_limit = result_limit

    # the prompt -----------------------------------------------------------------
    def system_prompt(self) -> str:
        if self.system_override:
            return self.system_override
        tools = list(self.registry) if self.tools_enabled else []
        if self.tool_mode == "native":
            style = "native"
        else:
            style = "short" if _is_thau(self.backend) else "full"
        return prompt_format.system_prompt(tools, style=style)

    def _request(self, conversation: list[Message], *, final: bool) -> list[Message]:
        messages: list[Message] = [{"role": "system", "content": self.system_prompt()}]
        messages += [m for m in conversation if m["role"] != "system"]
        if final:
            messages.append({"role": "system", "content": FINAL_ANSWER_NOTE})
        return messages

    def _step_options(self, final: bool) -> GenerationOptions:
        grammar = self.options.grammar_tools and self.tools_enabled and not final
        grammar = grammar and self.tool_mode == "text"
        schemas = {tool.name: tool.parameters() for tool in self.registry} if grammar else {}
        gate = None  # THAU adapters in text mode, while tools may still be called
        if self.tools_enabled and not final and self.tool_mode == "text" and _is_thau(self.backend):
            gate = DEFAULT_THRESHOLD if self.options.tool_gate is None else self.options.tool_gate
        return replace(
            self.options,
            grammar_tools=grammar,
            tool_schemas=schemas,
            native_messages=self.tool_mode == "native",
            tool_gate=gate,
        )

    # one turn -------------------------------------------------------------------
    def run_turn(self, conversation: list[Message], user_text: str | None) -> Iterator[AgentEvent]:
        """Add ``user_text`` (unless None: retry) and run until the model answers."""
        if user_text is not None:
            conversation.append({"role": "user", "content": user_text})
        start = time.perf_counter()
        first_token: float | None = None
        seen: set[str] = set()
        totals: dict[str, Any] = {}
        steps = 0
        for step in range(self.max_steps + 1):
            final = step == self.max_steps
            steps = step + 1
            native = self.tool_mode == "native" and self.tools_enabled and not final
            tools = self.registry.native_schemas() if native else None
            options = self._step_options(final)
            reply: list[str] = []
            native_calls: list[dict[str, Any]] = []
            results: list[Message] = []
            parser = ToolCallParser()
            done = False
            try:
                stream = self.backend.stream_chat(
                    self._request(conversation, final=final), tools=tools, options=options
                )
                for chunk in stream:
                    text = chunk.text
                    if text:
                        if first_token is None:
                            first_token = time.perf_counter() - start
                        reply.append(text)
                        for event in parser.feed(text):
                            if type(event) is TextChunk:  # the hot path
                                yield TextDelta(event.text)
                            else:
                                yield from self._on_parse_event(event, final, seen, results)
                    for call in chunk.tool_calls:
                        native_calls.append(call)
                        arguments = call.get("arguments") or {}
                        parsed = ToolCall(call["name"], arguments, "", syntax="native")
                        yield from self._on_parse_event(parsed, final, seen, results)
                    if chunk.done:
                        _add_stats(totals, chunk.stats)
                for event in parser.close():
                    yield from self._on_parse_event(event, final, seen, results)
                done = True
            finally:
                message: Message = {"role": "assistant", "content": "".join(reply)}
                if native_calls:
                    message["tool_calls"] = native_calls
                if not done:  # a broken stream or Ctrl-C: keep what was said, marked
                    message["content"] += " [interrupted]"
                if reply or native_calls or results or done:
                    conversation.append(message)
                conversation.extend(results)
            if not results:
                break
        yield TurnDone(steps, time.perf_counter() - start, first_token, totals)

    # calls ----------------------------------------------------------------------
    def _on_parse_event(
        self, event: Any, final: bool, seen: set[str], results: list[Message]
    ) -> Iterator[AgentEvent]:
        if isinstance(event, TextChunk):
            yield TextDelta(event.text)
        elif isinstance(event, ToolCallStart):
            yield ToolStarted(event.name)
        elif isinstance(event, ToolCallError):
            outcome = ToolOutcome(event.name, False, error=f"malformed tool call: {event.error}")
            yield from self._finish(event, outcome, results)
        elif isinstance(event, ToolCall):
            yield ToolRequested(event)
            outcome = self._dispatch(event, final, seen)
            yield from self._finish(event, outcome, results)

    def _dispatch(self, call: ToolCall, final: bool, seen: set[str]) -> ToolOutcome:
        if not self.tools_enabled:
            return ToolOutcome(call.name, False, error="tools are disabled in this session")
        if final:
            return ToolOutcome(
                call.name, False, error="not run: the step limit for this turn was reached"
            )
        key = call.name + prompt_format.dumps(call.arguments)
        if key in seen:
            return ToolOutcome(
                call.name,
                False,
                error="identical call already made this turn; use its result above",
            )
        seen.add(key)
        try:
            tool, args = self.registry.validate(call.name, call.arguments)
        except ToolError as exc:
            return ToolOutcome(call.name, False, error=str(exc))
        context = self.context
        if tool.needs_approval:
            approval = Approval(True) if self.auto_approve else self.approver(call, tool)
            if not approval.approved:
                reason = approval.reason or "the person declined to run this tool"
                return ToolOutcome(call.name, False, error=f"not approved: {reason}")
            context = replace(context, approved=True)
        return self.registry.execute(tool, args, context)

    def _finish(
        self, call: ToolCall | ToolCallError, outcome: ToolOutcome, results: list[Message]
    ) -> Iterator[AgentEvent]:
        content, saved = self._result_for_model(outcome)
        results.append({"role": "tool", "content": content, "tool_name": outcome.name})
        yield ToolFinished(call, outcome, saved)

    def _result_for_model(self, outcome: ToolOutcome) -> tuple[str, Path | None]:
        """The compact JSON the model sees; a long result is cut and saved in full."""
        content = prompt_format.format_tool_result(
            outcome.name, outcome.ok, outcome.result, outcome.error
        )
        if len(content) <= self.result_limit:
            return content, None
        digest = hashlib.sha256(content.encode("utf-8", "replace")).hexdigest()[:16]
        folder = self.context.data_dir / "tool_results"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{outcome.name}-{digest}.json"
        path.write_text(json.dumps(outcome.payload(), ensure_ascii=False, default=str), "utf-8")
        keep = self.result_limit // 2
        text = prompt_format.dumps(outcome.result if outcome.ok else outcome.error)
        cut = f"{text[:keep]} ... [truncated {len(text) - keep} chars; full result in {path}]"
        payload: dict[str, Any] = {"tool": outcome.name, "ok": outcome.ok, "truncated": True}
        payload["result" if outcome.ok else "error"] = cut
        return prompt_format.dumps(payload), path


def _is_thau(backend: Backend) -> bool:
    return is_thau_model(backend.model) or bool(getattr(backend, "thau_adapter", False))


def _add_stats(totals: dict[str, Any], stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + value

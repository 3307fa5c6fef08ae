"""How the chat looks (rich): the streamed answer, tool panels, approval prompts, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.text import Text

from thau.chat.agent import (
    AgentEvent,
    Notice,
    TextDelta,
    ToolFinished,
    ToolRequested,
    ToolStarted,
    TurnDone,
)
from thau.chat.parser import ToolCall
from thau.tools.registry import Tool

SCREEN_RESULT_LIMIT = 1500
"""Characters of a tool result shown on screen; the rest is on disk."""


def error(console: Console, message: str) -> None:
    """An error line in a clear red style (never parsed as markup)."""
    console.print(Text.assemble(("error: ", "bold red"), (message, "red")), soft_wrap=True)


def info(console: Console, message: str) -> None:
    console.print(Text(message, style="dim"), soft_wrap=True)


class _StreamedMarkdown:
    """The answer so far, parsed as markdown only when the screen refreshes."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def text(self) -> str:
        return "".join(self.parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Markdown(self.text())


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def call_panel(call: ToolCall) -> Panel:
    """A tool call with its arguments."""
    body = Syntax(_pretty(call.arguments), "json", word_wrap=True, background_color="default")
    return Panel(body, title=f"[bold cyan]tool[/] {call.name}", title_align="left", style="cyan")


def result_panel(event: ToolFinished, conversation_path: Path | None = None) -> Panel:
    """A tool's result (or error), cut to ``SCREEN_RESULT_LIMIT`` characters on screen."""
    outcome = event.outcome
    shown = _pretty(outcome.result) if outcome.ok else str(outcome.error)
    lines: list[Text] = []
    if len(shown) > SCREEN_RESULT_LIMIT:
        where = event.full_result_path or conversation_path
        more = len(shown) - SCREEN_RESULT_LIMIT
        shown = shown[:SCREEN_RESULT_LIMIT] + " …"
        note = f"[{more} more characters not shown"
        note += f"; full result in {where}]" if where else "]"
        lines.append(Text(note, style="dim"))
    elif event.full_result_path:
        lines.append(Text(f"[full result in {event.full_result_path}]", style="dim"))
    body = Text(shown, style="" if outcome.ok else "red")
    status = f"ok · {outcome.elapsed_s:.2f} s" if outcome.ok else "failed"
    color = "green" if outcome.ok else "red"
    title = f"[bold {color}]{outcome.name}[/] {status}"
    return Panel(Group(body, *lines), title=title, title_align="left", style=color)


def approval_panel(tool: Tool, call: ToolCall) -> Panel:
    """What a call that needs approval will do, highlighted."""
    lexer, text = tool.describe_call(call.arguments)
    body = Syntax(text, lexer, word_wrap=True, line_numbers=text.count("\n") > 2)
    title = f"[bold yellow]{tool.name}[/] wants to run"
    return Panel(body, title=title, title_align="left", style="yellow")


def turn_stats(done: TurnDone) -> str:
    """One line about a finished turn, like ``ollama run --verbose`` prints:
    ``2.41 s · first token 0.52 s · 37 tokens, 21.3 tokens/s · 2 model calls``."""
    parts = [f"{done.elapsed_s:.2f} s"]
    if done.first_token_s is not None:
        parts.append(f"first token {done.first_token_s:.2f} s")
    tokens = done.stats.get("eval_count")
    if tokens:
        words = f"{tokens} token{'s' if tokens != 1 else ''}"
        duration = done.stats.get("eval_duration") or done.stats.get("total_duration")
        if duration:
            words += f", {tokens / (duration / 1e9):.1f} tokens/s"
        parts.append(words)
    prompt = done.stats.get("prompt_eval_count")
    if prompt:
        parts.append(f"prompt {prompt} tokens")
    if done.steps > 1:
        parts.append(f"{done.steps} model calls")
    return " · ".join(parts)


class TurnView:
    """Shows one turn as it happens: a spinner until the first token, then the answer."""

    def __init__(
        self, console: Console, conversation_path: Path | None = None, *, verbose: bool = False
    ) -> None:
        self.console = console
        self.conversation_path = conversation_path
        self._live: Live | None = None
        self._answer: _StreamedMarkdown | None = None
        self._shown: Any = None
        self.verbose = verbose

    # the live area ------------------------------------------------------------
    def _show(self, renderable: Any) -> None:
        """Show ``renderable`` live on a terminal; elsewhere only the answer is printed,
        once, when the live area stops (no spinner frames in a pipe or a log)."""
        self._shown = renderable
        if not self.console.is_terminal:
            return
        if self._live is None:
            self._live = Live(
                renderable, console=self.console, refresh_per_second=8, transient=False
            )
            self._live.start(refresh=True)
        else:
            self._live.update(renderable)

    def thinking(self, label: str = "thinking…") -> None:
        self._answer = None
        self._show(Spinner("dots", Text(label, style="dim")))

    def pause(self) -> None:
        """Stop the live area (before a prompt or a panel); an answer stays, a spinner goes."""
        keep = self._answer is not None and bool(self._answer.text().strip())
        if self._live is not None:
            live, self._live = self._live, None
            live.transient = not keep
            live.stop()
        elif keep and self._answer is not None:
            self.console.print(Markdown(self._answer.text()))
        self._answer = None
        self._shown = None

    # events -----------------------------------------------------------------
    def handle(self, event: AgentEvent) -> None:
        if isinstance(event, TextDelta):
            if self._answer is None:
                if not event.text.strip():
                    return  # no empty answer boxes for whitespace between tool calls
                self._answer = _StreamedMarkdown()
                self._show(self._answer)
            self._answer.parts.append(event.text)
        elif isinstance(event, ToolStarted):
            self.pause()
            self.thinking(f"calling {event.name}…")
        elif isinstance(event, ToolRequested):
            self.pause()
            self.console.print(call_panel(event.call))
            self.thinking(f"running {event.call.name}…")
        elif isinstance(event, ToolFinished):
            self.pause()
            if not isinstance(event.call, ToolCall):  # a malformed call
                raw = Text(event.call.raw or event.call.name, style="red")
                self.console.print(Panel(raw, title="malformed tool call", style="red"))
            self.console.print(result_panel(event, self.conversation_path))
            self.thinking()
        elif isinstance(event, Notice):
            self.pause()
            info(self.console, event.message)
        elif isinstance(event, TurnDone):
            self.pause()
            if self.verbose:
                info(self.console, turn_stats(event))

    def interrupted(self) -> None:
        self.pause()
        self.console.print(Text("[interrupted]", style="bold yellow"))

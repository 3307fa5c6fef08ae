"""How the chat looks (rich): the streamed answer, tool panels, approval prompts, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
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
from thau.chat.result_views import (
    PREVIEW_COLUMNS,
    ResultView,
    ViewContext,
    ViewMemory,
    clipped,
    outline,
    view_result,
)
from thau.tools.image_preview import inline_protocol, iterm2_sequence, kitty_sequence
from thau.tools.registry import Tool, ToolRegistry

LAST_RESULT_LIMIT = 20_000
"""Characters of a full result that ``/last`` shows; the rest is in the saved file."""


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


def call_panel(call: ToolCall, tool: Tool | None = None) -> Panel:
    """A tool call: what its tool's preview shows (code as code), else its arguments as
    ``key: value`` lines."""
    body: Any
    if tool is not None and tool.preview is not None:
        lexer, text = tool.describe_call(call.arguments)
        body = Syntax(text, lexer, word_wrap=True, background_color="default")
    else:
        body = Group(*outline(call.arguments))
    return Panel(body, title=f"[bold cyan]tool[/] {call.name}", title_align="left", style="cyan")


def result_panel(
    event: ToolFinished,
    conversation_path: Path | None = None,
    *,
    context: ViewContext | None = None,
    view: ResultView | None = None,
    verbose: bool = False,
) -> Panel:
    """A tool's result drawn for a person by its view (:mod:`thau.chat.result_views`);
    ``verbose`` adds the result's JSON. Long text is cut to ``SCREEN_RESULT_LIMIT``."""
    outcome = event.outcome
    context = replace(
        context or ViewContext(),
        saved=event.full_result_path,
        conversation=conversation_path,
        cuts=[],
    )
    view = view or view_result(outcome, context)
    body: Any = view.body
    if verbose:
        raw = json.dumps(outcome.payload(), ensure_ascii=False, indent=2, default=str)
        body = Group(body, Rule("JSON", style="dim"), clipped(raw, context))
    status = view.status or "ok"
    if outcome.ok:
        status += f" · {outcome.elapsed_s:.2f} s"
    title = f"[bold {view.color}]{outcome.name}[/] {status}"
    return Panel(body, title=title, title_align="left", style=view.color)


def full_result_panel(name: str, record: dict[str, Any], saved: Path | None = None) -> Panel:
    """One tool result's whole JSON, for ``/last`` (cut at ``LAST_RESULT_LIMIT``)."""
    text = json.dumps(record, ensure_ascii=False, indent=2, default=str)
    parts: list[Any] = []
    if len(text) > LAST_RESULT_LIMIT:
        more = len(text) - LAST_RESULT_LIMIT
        text = text[:LAST_RESULT_LIMIT] + "\n…"
        note = f"[{more} more characters not shown" + (
            f"; all of it is in {saved}]" if saved else "]"
        )
        parts.append(Text(note, style="dim"))
    elif saved:
        parts.append(Text(f"[also saved in {saved}]", style="dim"))
    body = Syntax(text, "json", word_wrap=True, background_color="default")
    return Panel(Group(body, *parts), title=f"[bold]{name}[/] full result", title_align="left")


def show_inline(console: Console, path: Path, protocol: str) -> None:
    """An image drawn in the terminal itself (kitty's or iTerm2's protocol)."""
    try:
        png = path.read_bytes()
    except OSError:
        return
    if protocol == "kitty":
        sequence = kitty_sequence(png, PREVIEW_COLUMNS)
    else:
        sequence = iterm2_sequence(png, path.name, PREVIEW_COLUMNS)
    console.file.write(sequence + "\n")
    console.file.flush()


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
        self,
        console: Console,
        conversation_path: Path | None = None,
        *,
        verbose: bool = False,
        memory: ViewMemory | None = None,
        registry: ToolRegistry | None = None,
    ) -> None:
        self.console = console
        self.conversation_path = conversation_path
        self._live: Live | None = None
        self._answer: _StreamedMarkdown | None = None
        self._shown: Any = None
        self.verbose = verbose
        self.registry = registry
        terminal = console.is_terminal
        self.views = ViewContext(
            memory=memory if memory is not None else ViewMemory(),
            terminal=terminal,
            inline_images=inline_protocol() if terminal else None,
        )
        self.finished: list[ToolFinished] = []
        """This turn's tool results, in order (``/last`` shows them in full)."""

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
            tool = self._tool(event.call.name)
            self.console.print(call_panel(event.call, tool))
            self.thinking(f"running {event.call.name}…")
        elif isinstance(event, ToolFinished):
            self.pause()
            self.finished.append(event)
            if not isinstance(event.call, ToolCall):  # a malformed call
                raw = Text(event.call.raw or event.call.name, style="red")
                self.console.print(Panel(raw, title="malformed tool call", style="red"))
            context = replace(
                self.views, saved=event.full_result_path, conversation=self.conversation_path
            )
            view = view_result(event.outcome, context)
            self.console.print(
                result_panel(event, self.conversation_path, view=view, verbose=self.verbose)
            )
            if view.image is not None and self.views.inline_images:
                show_inline(self.console, view.image, self.views.inline_images)
            self.thinking()
        elif isinstance(event, Notice):
            self.pause()
            info(self.console, event.message)
        elif isinstance(event, TurnDone):
            self.pause()
            if self.verbose:
                info(self.console, turn_stats(event))

    def _tool(self, name: str) -> Tool | None:
        if self.registry is None or name not in self.registry:
            return None
        return self.registry.get(name)

    def interrupted(self) -> None:
        self.pause()
        self.console.print(Text("[interrupted]", style="bold yellow"))

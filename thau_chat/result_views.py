"""How a tool's result is drawn for a person: one view per tool name.

Only the screen changes: the model still gets the compact JSON of every result, and the
full JSON stays one command away (``/last``, or ``/verbose`` for every result).

- ``code_execution``: the program's stdout and stderr (a traceback highlighted), the exit
  status only when it is not 0, and the sandbox's isolation warning once per session;
- ``web_search``: a numbered list of titles, links and one-line snippets;
- ``generate_image``: a preview on a terminal, then the file's path and URL;
- every other tool (plugins, MCP tools named ``<server>__<tool>``): text as text, an MCP
  result's text and structured content, other JSON as an outline of keys and values.

A view gets the tool's ``result`` and a :class:`ViewContext`, and returns a
:class:`ResultView`, or ``None`` when the result is not of the shape it draws (then the
generic view draws it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text

from thau.tools.registry import ToolOutcome

SCREEN_RESULT_LIMIT = 1500
"""Characters of a tool result shown on screen; the rest is on disk and behind ``/last``."""
PREVIEW_COLUMNS = 32


@dataclass
class ViewMemory:
    """What the views remember over one chat session."""

    warnings_shown: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ViewContext:
    memory: ViewMemory = field(default_factory=ViewMemory)
    terminal: bool = False
    """The console is a terminal: images get a preview."""
    inline_images: str | None = None
    """The terminal's inline image protocol (``kitty``, ``iterm2``), if it has one."""
    saved: Path | None = None
    """Where the whole result was saved, when it was too long for the model."""
    conversation: Path | None = None
    limit: int = SCREEN_RESULT_LIMIT
    cuts: list[int] = field(default_factory=list)
    """Characters left out of the view being drawn (filled in as it cuts)."""


@dataclass(frozen=True)
class ResultView:
    body: RenderableType
    status: str | None = None
    """Said in the panel's title instead of ``ok`` (``exit 1``)."""
    color: str = "green"
    image: Path | None = None
    """An image to show inline after the panel (kitty, iTerm2)."""


View = Callable[[Any, ViewContext], ResultView | None]
VIEWS: dict[str, View] = {}


def result_view(name: str) -> Callable[[View], View]:
    """Register the decorated function as the view of tool ``name``."""

    def register(view: View) -> View:
        VIEWS[name] = view
        return view

    return register


def view_result(outcome: ToolOutcome, context: ViewContext) -> ResultView:
    """The view of one outcome: the tool's own, else the generic one; an error in red."""
    context = replace(context, cuts=[])
    if not outcome.ok:
        shown = ResultView(clipped(str(outcome.error), context, style="red"), "failed", "red")
    else:
        shown = _drawn(outcome, context)
    if context.saved and not context.cuts:  # all on screen, but the model saw it cut
        note = Text(f"[full result in {context.saved}]", style="dim")
        shown = replace(shown, body=Group(shown.body, note))
    return shown


def _drawn(outcome: ToolOutcome, context: ViewContext) -> ResultView:
    view = VIEWS.get(outcome.name)
    if view is not None:
        try:
            shown = view(outcome.result, context)
        except Exception:  # a result of an unexpected shape: the generic view draws it
            shown = None
        if shown is not None:
            return shown
        context.cuts.clear()
    return generic_view(outcome.result, context)


# -- text within limits --------------------------------------------------------------
def _more_note(more: int, context: ViewContext) -> Text:
    context.cuts.append(more)
    where = context.saved or context.conversation
    note = f"[{more} more characters not shown"
    note += f"; full result in {where}]" if where else "]"
    return Text(note, style="dim")


def clipped(text: str, context: ViewContext, *, style: str = "") -> RenderableType:
    """``text`` cut to the screen limit, with a note saying where the rest is."""
    if len(text) <= context.limit:
        return Text(text, style=style)
    more = len(text) - context.limit
    return Group(Text(text[: context.limit] + " …", style=style), _more_note(more, context))


def _one_line(value: Any) -> str:
    return " ".join(str(value or "").split())


# -- the generic view ------------------------------------------------------------------
def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def outline(value: Any, depth: int = 0) -> Iterator[Text]:
    """JSON as lines a person reads: ``key: value``, nested values indented, list items
    after ``-``."""
    pad = "  " * depth
    if isinstance(value, dict):
        if not value:
            yield Text(pad + "(empty)", style="dim")
        for key, item in value.items():
            label = Text(pad) + Text(f"{key}:", style="bold")
            if isinstance(item, dict | list) and item:
                yield label
                yield from outline(item, depth + 1)
            elif isinstance(item, str) and "\n" in item:
                yield label
                yield from (Text(pad + "  " + line) for line in item.splitlines())
            else:
                shown = "(none)" if isinstance(item, dict | list) else _scalar(item)
                yield label + Text(" " + shown)
    elif isinstance(value, list):
        if not value:
            yield Text(pad + "(none)", style="dim")
        for item in value:
            first, *rest = outline(item, depth + 1)
            yield Text(pad + "- ") + first[len(pad) + 2 :]
            yield from rest
    else:
        for line in _scalar(value).splitlines() or [""]:
            yield Text(pad + line)


def _outlined(value: Any, context: ViewContext) -> RenderableType:
    """The outline of ``value``, cut at the screen limit."""
    lines: list[Text] = []
    used = 0
    total = 0
    for line in outline(value):
        total += len(line) + 1
        if used + len(line) <= context.limit:
            lines.append(line)
            used += len(line) + 1
    if total > used:
        lines.append(_more_note(total - used, context))
    return Group(*lines)


def _mcp_parts(result: dict[str, Any]) -> Iterator[RenderableType]:
    """An MCP tool result's content items, as text."""
    for item in result.get("content") or []:
        kind = item.get("type")
        if kind == "text":
            yield Text(str(item.get("text", "")))
        elif kind in ("image", "audio"):
            yield Text(f"[{kind}: {item.get('mimeType') or item.get('mime_type') or '?'}]", "dim")
        elif kind in ("resource", "resource_link"):
            resource = item.get("resource") if isinstance(item.get("resource"), dict) else item
            if resource.get("text"):
                yield Text(str(resource["text"]))
            else:
                yield Text(f"[resource: {resource.get('uri', '?')}]", style="dim")


def _is_mcp(result: Any) -> bool:
    content = result.get("content") if isinstance(result, dict) else None
    return isinstance(content, list) and all(
        isinstance(item, dict) and "type" in item for item in content
    )


def generic_view(result: Any, context: ViewContext) -> ResultView:
    """Any tool: text as text, an MCP result's content, other JSON as an outline."""
    if isinstance(result, str):
        return ResultView(clipped(result, context))
    if _is_mcp(result):
        parts = list(_mcp_parts(result))
        structured = result.get("structuredContent", result.get("structured_content"))
        if structured is not None and not any(isinstance(p, Text) and p.plain for p in parts):
            parts.append(_outlined(structured, context))
        failed = bool(result.get("isError", result.get("is_error")))
        text = "\n".join(p.plain for p in parts if isinstance(p, Text))
        body = clipped(text, context) if len(text) > context.limit else Group(*parts)
        return ResultView(body, "error" if failed else None, "red" if failed else "green")
    return ResultView(_outlined(result, context))


# -- code_execution ----------------------------------------------------------------------
@result_view("code_execution")
def code_view(result: Any, context: ViewContext) -> ResultView | None:
    if not isinstance(result, dict) or "stdout" not in result or "stderr" not in result:
        return None
    stdout, stderr = str(result["stdout"] or ""), str(result["stderr"] or "")
    parts: list[RenderableType] = []
    if stdout:
        parts.append(clipped(stdout.rstrip("\n"), context))
    if stderr:
        if stdout:
            parts.append(Text("stderr", style="dim"))
        if "Traceback (most recent call last)" in stderr and len(stderr) <= context.limit:
            parts.append(
                Syntax(stderr.rstrip("\n"), "pytb", word_wrap=True, background_color="default")
            )
        else:
            parts.append(clipped(stderr.rstrip("\n"), context, style="red"))
    if not stdout and not stderr:
        parts.append(Text("(no output)", style="dim"))
    for stream in ("stdout", "stderr"):
        if result.get(f"{stream}_truncated"):
            size = result.get(f"{stream}_bytes")
            of = f" of {size} bytes" if isinstance(size, int) else ""
            parts.append(Text(f"[{stream} cut by the sandbox's output limit{of}]", style="dim"))
    warning = result.get("warning")
    if isinstance(warning, str) and warning and warning not in context.memory.warnings_shown:
        context.memory.warnings_shown.add(warning)
        parts.append(Text(warning, style="yellow"))
    status, color = None, "green"
    code = result.get("exit_code")
    if result.get("timed_out"):
        status, color = "timed out", "red"
    elif result.get("signal"):
        status, color = f"killed by {result['signal']}", "red"
    elif code not in (0, None):
        status, color = f"exit {code}", "yellow"
    return ResultView(Group(*parts), status, color)


# -- web_search --------------------------------------------------------------------------
@result_view("web_search")
def search_view(result: Any, context: ViewContext) -> ResultView | None:
    if not isinstance(result, dict) or not isinstance(result.get("results"), list):
        return None
    lines: list[Text] = []
    for number, item in enumerate(result["results"], 1):
        if not isinstance(item, dict):
            return None
        url = _one_line(item.get("url"))
        title = _one_line(item.get("title")) or url or "(untitled)"
        lines.append(Text.assemble((f"{number}. ", "bold"), (title, "bold")))
        if url:
            lines.append(Text("   " + url, style="cyan", overflow="fold"))
        if snippet := _one_line(item.get("snippet")):
            lines.append(Text("   " + snippet, style="dim", no_wrap=True, overflow="ellipsis"))
    if not lines:
        lines.append(Text(f"No results for {_one_line(result.get('query'))!r}.", style="dim"))
    source = [str(result["backend"])] if result.get("backend") else []
    if result.get("cached"):
        source.append("cached")
    if source:
        lines.append(Text(" · ".join(source), style="dim"))
    return ResultView(Group(*lines))


# -- generate_image ----------------------------------------------------------------------
def _is_png(path: Path) -> bool:
    from thau.tools.image_preview import PNG_MAGIC

    try:
        with path.open("rb") as fh:
            return fh.read(len(PNG_MAGIC)) == PNG_MAGIC
    except OSError:
        return False


@result_view("generate_image")
def image_view(result: Any, context: ViewContext) -> ResultView | None:
    if not isinstance(result, dict) or not isinstance(result.get("path"), str):
        return None
    path = Path(result["path"])
    parts: list[RenderableType] = []
    image = None
    if context.terminal and path.is_file():
        if context.inline_images and _is_png(path):
            image = path
        else:
            from thau.tools.image_preview import half_blocks

            if (blocks := half_blocks(path, PREVIEW_COLUMNS)) is not None:
                parts.append(blocks)
    parts.append(Text.assemble(("file ", "dim"), str(path)))
    if result.get("image_url"):
        parts.append(Text.assemble(("url  ", "dim"), str(result["image_url"])))
    details = []
    if result.get("width") and result.get("height"):
        details.append(f"{result['width']}×{result['height']}")
    if result.get("seed") is not None:
        details.append(f"seed {result['seed']}")
    if details:
        parts.append(Text(" · ".join(details), style="dim"))
    if not path.is_file():
        parts.append(Text("(the file is not there any more)", style="yellow"))
    return ResultView(Group(*parts), image=image)

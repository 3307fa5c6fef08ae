"""The REPL's slash commands; each one is registered with its usage and help."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from thau.chat import conversation as conversations
from thau.chat.parser import ToolCall
from thau.chat.render import error, full_result_panel, info

if TYPE_CHECKING:
    from thau.chat.repl import ChatRepl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")

Handler = Callable[["ChatRepl", str], bool]
"""Runs a command with its argument text; returns True to leave the REPL."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Handler
    aliases: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}
BARE_WORDS = {"exit": "exit", "quit": "exit", "salir": "exit", "limpiar": "clear"}
"""Words that work without the slash."""


def command(name: str, usage: str, help: str, aliases: tuple[str, ...] = ()) -> Any:
    """Register the decorated function as ``/name``."""

    def register(run: Handler) -> Handler:
        COMMANDS[name] = Command(name, usage, help, run, aliases)
        return run

    return register


def names() -> list[str]:
    """Every ``/word`` that Tab can complete."""
    out = []
    for cmd in COMMANDS.values():
        out += [f"/{cmd.name}"] + [f"/{alias}" for alias in cmd.aliases]
    return out


def find(word: str) -> Command | None:
    for cmd in COMMANDS.values():
        if word == cmd.name or word in cmd.aliases:
            return cmd
    return None


def is_command(line: str) -> bool:
    text = line.strip()
    return text.startswith("/") or text.lower() in BARE_WORDS


def dispatch(repl: ChatRepl, line: str) -> bool:
    """Run the command in ``line``; True means leave the REPL."""
    text = line.strip()
    if text.lower() in BARE_WORDS:
        return COMMANDS[BARE_WORDS[text.lower()]].run(repl, "")
    word, _, arg = text[1:].partition(" ")
    cmd = find(word.lower())
    if cmd is None:
        listed = ", ".join(f"/{c.name}" for c in COMMANDS.values())
        error(repl.console, f"unknown command /{word}. Commands: {listed} (/help for details)")
        return False
    return cmd.run(repl, arg.strip())


# -- the commands -------------------------------------------------------------------
@command("help", "/help", "show the commands and keys")
def _help(repl: ChatRepl, arg: str) -> bool:
    table = Table(show_header=False, box=None, padding=(0, 2))
    for cmd in COMMANDS.values():
        also = f" (also {', '.join('/' + a for a in cmd.aliases)})" if cmd.aliases else ""
        table.add_row(Text(cmd.usage, style="bold"), Text(cmd.help + also))
    repl.console.print(table)
    info(
        repl.console,
        "Enter sends · Alt-Enter (or Esc Enter) adds a line · Tab completes commands · "
        "Ctrl-C stops an answer · Ctrl-D, exit, quit or salir leaves",
    )
    return False


@command("exit", "/exit", "leave the chat (also exit, quit, salir, Ctrl-D)", ("quit", "salir"))
def _exit(repl: ChatRepl, arg: str) -> bool:
    return True


@command("clear", "/clear", "start a new, empty conversation (also limpiar)", ("limpiar",))
def _clear(repl: ChatRepl, arg: str) -> bool:
    repl.new_conversation()
    if repl.console.is_terminal:
        repl.console.clear()
    info(repl.console, f"New conversation {repl.conv.id}.")
    return False


@command("model", "/model [name]", "show the model, or switch to another one")
def _model(repl: ChatRepl, arg: str) -> bool:
    if arg:
        repl.switch_model(arg)
        return False
    if repl.session is None:
        wanted = repl.settings.model or "the default model"
        info(repl.console, f"No backend yet (wanted {wanted}); it is retried on each message.")
    else:
        backend = repl.session.selection.backend
        repl.console.print(Text.assemble(("model: ", "bold"), backend.model or "?"))
        label = getattr(backend, "adapter_label", None)
        if label:
            where = f"  {getattr(backend, 'adapter_path', '')}"
            repl.console.print(Text.assemble(("adapter: ", "bold"), label, (where, "dim")))
        info(repl.console, f"{backend.describe()} · {repl.session.selection.note}")
    return False


def _type_of(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "enum"
    kind = str(schema.get("type", "any"))
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array[{_type_of(schema['items'])}]"
    return kind


CONSTRAINTS = {
    "minimum": ">= {}",
    "exclusiveMinimum": "> {}",
    "maximum": "<= {}",
    "exclusiveMaximum": "< {}",
    "minLength": "min length {}",
    "maxLength": "max length {}",
    "pattern": "pattern {}",
    "enum": "one of {}",
    "minItems": "min items {}",
    "maxItems": "max items {}",
}


def _constraints(schema: dict[str, Any]) -> str:
    found = []
    for part in [schema, *schema.get("anyOf", [])]:
        for key, template in CONSTRAINTS.items():
            if key in part:
                value = part[key]
                shown = ", ".join(map(str, value)) if isinstance(value, list) else value
                found.append(template.format(shown))
    if "default" in schema:
        found.append(f"default {json.dumps(schema['default'], ensure_ascii=False)}")
    return "; ".join(found)


@command("tools", "/tools", "list the tools and their arguments")
def _tools(repl: ChatRepl, arg: str) -> bool:
    registry = repl.registry
    if not len(registry):
        info(repl.console, "No tools are installed.")
    for tool in registry:
        schema = tool.parameters()
        required = set(schema.get("required", []))
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for header in ("argument", "type", "constraints", "required"):
            table.add_column(header, style="dim" if header == "constraints" else None)
        for name, prop in schema.get("properties", {}).items():
            table.add_row(
                name, _type_of(prop), _constraints(prop), "yes" if name in required else "no"
            )
        approval = "  [yellow](asks for approval)[/]" if tool.needs_approval else ""
        title = f"[bold]{escape(tool.signature())}[/]{approval}"
        body = Table.grid()
        body.add_row(Text(tool.description))
        body.add_row(table)
        repl.console.print(Panel(body, title=title, title_align="left"))
    for problem in registry.load_errors:
        error(repl.console, problem)
    return False


@command("mcp", "/mcp", "show the MCP servers, their state and their tools")
def _mcp(repl: ChatRepl, arg: str) -> bool:
    from thau.chat.session import attach_mcp
    from thau.errors import ThauError

    try:
        hub = attach_mcp(repl.registry, repl.settings)
    except ThauError as exc:
        error(repl.console, str(exc))
        return False
    if hub is None:
        info(
            repl.console,
            "No MCP servers. Add them with --mcp-config FILE (an mcpServers JSON) or "
            "[mcp_servers.NAME] tables in config.toml.",
        )
        return False
    for server in hub.status():
        style = {"ready": "green", "failed": "red"}.get(server.state, "yellow")
        body = Table.grid(padding=(0, 2))
        body.add_row(Text("runs", style="dim"), Text(server.transport))
        none = "none" if server.state == "failed" else "none yet"
        body.add_row(Text("tools", style="dim"), Text(", ".join(server.tools) or none))
        body.add_row(Text("approval", style="dim"), Text(server.approval))
        if server.detail:
            body.add_row(Text("note", style="dim"), Text(server.detail))
        if server.log is not None:
            body.add_row(Text("log", style="dim"), Text(str(server.log)))
        title = f"[bold]{escape(server.name)}[/] [{style}]{escape(server.state)}[/]"
        repl.console.print(Panel(body, title=title, title_align="left"))
    return False


@command("system", "/system [text|reset]", "show or set this conversation's system prompt")
def _system(repl: ChatRepl, arg: str) -> bool:
    if arg.lower() == "reset":
        repl.set_system(None)
        info(repl.console, "System prompt reset to the default.")
    elif arg:
        repl.set_system(arg)
        info(repl.console, "System prompt set for this conversation.")
    else:
        label = "custom" if repl.system else "default"
        shown = repl.system or (
            repl.session.agent.system_prompt()
            if repl.session
            else "(generated from the tools once a backend answers)"
        )
        repl.console.print(Panel(Text(shown), title=f"system prompt ({label})", title_align="left"))
    return False


@command("save", "/save [file]", "save the conversation (to its own file, or to FILE)")
def _save(repl: ChatRepl, arg: str) -> bool:
    try:
        path = repl.conv.save(Path(arg).expanduser() if arg else None)
    except OSError as exc:
        error(repl.console, f"cannot save to {arg or repl.conv.path}: {exc}")
        return False
    info(repl.console, f"Saved {len(repl.conv.messages)} messages to {path}")
    return False


def _first_user_line(path: Path) -> str:
    try:
        data = json.loads(path.read_text("utf-8"))
        messages = data.get("messages", []) if isinstance(data, dict) else data
        first = next((m["content"] for m in messages if m.get("role") == "user"), "")
        return f"{len(messages)} messages · {' '.join(str(first).split())[:60]}"
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return "(unreadable)"


@command("load", "/load [file|id]", "continue a saved conversation (no argument: list recent)")
def _load(repl: ChatRepl, arg: str) -> bool:
    if arg:
        repl.load_conversation(arg)
        return False
    recent = conversations.recent(repl.folder)
    if not recent:
        info(repl.console, f"No saved conversations in {repl.folder}.")
        return False
    table = Table(box=None, padding=(0, 2))
    table.add_column("id", style="bold")
    table.add_column("conversation")
    for path in reversed(recent):
        table.add_row(path.stem, _first_user_line(path))
    repl.console.print(table)
    info(repl.console, "Load one with /load ID (a prefix is enough).")
    return False


@command("retry", "/retry", "answer the last message again")
def _retry(repl: ChatRepl, arg: str) -> bool:
    repl.retry()
    return False


def _queue_for_training(repl: ChatRepl, fix: str | None) -> None:
    """Queue the last turn (as it was, or with ``fix``); say what was queued, or why not."""
    from thau.chat import feedback

    try:
        done = feedback.correction(repl.conv, repl.registry, fix=fix)
        queued = feedback.queue_example(done.example, repl.settings.data_dir)
    except feedback.FeedbackError as exc:
        error(repl.console, f"{exc} (nothing was queued)")
        return
    info(repl.console, feedback.confirmation(done, queued))


@command("good", "/good", "queue the last exchange for training as it is (it was right)")
def _good(repl: ChatRepl, arg: str) -> bool:
    if arg:
        error(repl.console, "/good takes no text; /fix TEXT queues a corrected reply")
        return False
    _queue_for_training(repl, None)
    return False


@command(
    "fix",
    "/fix TEXT",
    "queue your last message with TEXT as the right reply "
    "(an answer, a <TOOL:name>{...}</TOOL> call, or no tool[: answer])",
)
def _fix(repl: ChatRepl, arg: str) -> bool:
    _queue_for_training(repl, arg)
    return False


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def last_image(messages: list[dict[str, Any]]) -> Path | None:
    """The newest local image file named in a tool result."""
    for message in reversed(messages):
        if message.get("role") != "tool":
            continue
        try:
            payload = json.loads(message.get("content") or "")
        except ValueError:
            payload = str(message.get("content", "")).split('"')
        for text in reversed(list(_strings(payload))):
            if text.lower().endswith(IMAGE_SUFFIXES) and "://" not in text:
                path = Path(text).expanduser()
                if path.is_file():
                    return path
    return None


@command(
    "verbose",
    "/verbose",
    "show timings, tokens/s and each tool result's JSON after each answer (on/off)",
)
def _verbose(repl: ChatRepl, arg: str) -> bool:
    on = not repl.settings.verbose
    repl.settings = repl.settings.model_copy(update={"verbose": on})
    info(
        repl.console, f"Timings and tool results' JSON after each answer: {'on' if on else 'off'}."
    )
    return False


def _saved_tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The tool messages since the last user message, as the model saw them."""
    found: list[tuple[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") == "user":
            break
        if message.get("role") == "tool":
            content = message.get("content") or ""
            try:
                record = json.loads(content)
            except ValueError:
                record = content
            name = record.get("tool") if isinstance(record, dict) else None
            found.append((str(name or message.get("tool_name") or "tool"), record))
    return found[::-1]


@command("last", "/last", "show the last tool results in full, as JSON")
def _last(repl: ChatRepl, arg: str) -> bool:
    if repl.last_results and repl.last_results_in == repl.conv.path:
        for event in repl.last_results:
            record = {"arguments": getattr(event.call, "arguments", None)}
            record |= event.outcome.payload() | {"elapsed_s": round(event.outcome.elapsed_s, 4)}
            if not isinstance(event.call, ToolCall):
                record["raw"] = event.call.raw
            panel = full_result_panel(event.outcome.name, record, event.full_result_path)
            repl.console.print(panel)
        return False
    saved = _saved_tool_results(repl.conv.messages)
    if not saved:
        info(repl.console, "No tool has run in this conversation yet.")
    for name, record in saved:
        repl.console.print(full_result_panel(name, record))
    return False


@command("open", "/open", "open the last generated image in the system viewer")
def _open(repl: ChatRepl, arg: str) -> bool:
    path = last_image(repl.conv.messages)
    if path is None:
        info(repl.console, "No image in this conversation yet.")
        return False
    from thau.tools.image_preview import open_image

    try:
        opened = open_image(path)
    except OSError as exc:
        error(repl.console, f"cannot open {path}: {exc}")
        return False
    if opened:
        info(repl.console, f"Opened {path}")
    else:
        info(repl.console, f"No image viewer found; the image is at {path}")
    return False

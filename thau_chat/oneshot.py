"""``thau-chat --message``: answer once, print, exit (0, or 1 with a reason on stderr)."""

from __future__ import annotations

import json
import sys
from typing import Any

from thau.chat.agent import (
    YES_ANSWERS,
    Approval,
    Notice,
    TextDelta,
    ToolFinished,
    ToolRequested,
    TurnDone,
)
from thau.chat.config import Settings
from thau.chat.conversation import Conversation
from thau.chat.event_stream import EventStream, call_record, turn_timings
from thau.chat.parser import ToolCall
from thau.chat.session import build_session
from thau.errors import ThauError
from thau.prompt_format import dumps
from thau.tools.registry import Tool


def read_message(text: str) -> str:
    """``-`` reads stdin; bytes that are not UTF-8 are replaced, with a warning."""
    if text != "-":
        return text
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(
            f"thau-chat: warning: stdin is not valid UTF-8 (byte {raw[exc.start]:#x} at "
            f"{exc.start}); undecodable bytes were replaced",
            file=sys.stderr,
        )
        return raw.decode("utf-8", errors="replace")


def terminal_approver(call: ToolCall, tool: Tool) -> Approval:
    """Ask y/N on the terminal; refuse when there is no terminal to ask."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return Approval(
            False,
            f"{tool.name} needs approval and there is no terminal to ask; "
            "run with --yes to allow it",
        )
    _, text = tool.describe_call(call.arguments)
    print(f"\n{tool.name} wants to run:\n{text}", file=sys.stderr)
    answer = input("Run it? [y/N] ").strip().lower()
    return Approval(answer in YES_ANSWERS, "the person declined")


def run_once(
    settings: Settings,
    message: str,
    *,
    as_json: bool,
    load: str | None = None,
    json_stream: bool = False,
) -> int:
    """One turn; ``as_json`` prints one document at the end, ``json_stream`` a line per
    event as it happens (:mod:`thau.chat.event_stream`), which ends with an ``error``
    event, not a traceback, whatever fails."""
    text = read_message(message)
    if not text.strip():
        print("thau-chat: error: the message is empty", file=sys.stderr)
        return 2
    stream = EventStream(sys.stdout) if json_stream else None
    quiet = as_json or json_stream
    folder = settings.data_dir / "conversations"
    try:
        conv = Conversation.load(folder, load) if load else Conversation(folder)
        session = build_session(settings, approver=terminal_approver)
    except Exception as exc:
        if stream is None:
            raise
        return _stream_failed(stream, exc)
    if stream is not None:
        stream.start(session.selection.backend, conv.path)
    elif not as_json:
        print(session.selection.note, file=sys.stderr)
    out = sys.stdout
    calls: list[dict[str, Any]] = []
    answer: list[str] = []
    timings: dict[str, Any] = {}
    error: str | None = None
    interrupted = False
    run = session.run_record()
    conv.note_run(run)
    try:
        for event in session.agent.run_turn(conv.messages, text):
            if stream is not None:
                stream.send(event)
            if isinstance(event, TextDelta):
                answer.append(event.text)
                if not quiet:
                    out.write(event.text)
                    out.flush()
            elif isinstance(event, ToolRequested) and not quiet:
                out.write(f"\n[{event.call.name}] {dumps(event.call.arguments)}\n")
            elif isinstance(event, ToolFinished):
                calls.append(call_record(event))
                answer.clear()
                if not quiet:
                    _show_result(out, event)
            elif isinstance(event, Notice) and not quiet:
                print(event.message, file=sys.stderr)
            elif isinstance(event, TurnDone):
                timings = turn_timings(event)
    except ThauError as exc:
        error = " ".join(str(exc).split())
    except (Exception, KeyboardInterrupt) as exc:
        if stream is None:
            raise
        error, interrupted = _failure(exc), isinstance(exc, KeyboardInterrupt)
    finally:
        if conv.messages:
            conv.save()
    if stream is not None:
        stream.end(
            error=error, answer="".join(answer).strip(), timings=timings, conversation=conv.path
        )
    if as_json:
        backend = session.selection.backend
        adapter = getattr(backend, "adapter_path", None)
        doc = {
            "backend": backend.name,
            "model": backend.model,
            "adapter": str(adapter) if adapter else None,
            "adapter_version": run["adapter_version"],
            "answer": "".join(answer).strip(),
            "messages": conv.messages,
            "tool_calls": calls,
            "timings": timings,
            "conversation": str(conv.path),
            "error": error,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    elif not error and not json_stream:
        out.write("\n")
    if error:
        print(f"thau-chat: error: {error}", file=sys.stderr)
        return 130 if interrupted else 1
    return 0


def _show_result(out: Any, event: ToolFinished) -> None:
    """A tool's result as the chat shows it (code output, numbered search results, where
    the image is), as plain text: ``--json`` and ``--json-stream`` carry the JSON."""
    from rich.console import Console

    from thau.chat.result_views import ViewContext, view_result

    shown = view_result(event.outcome, ViewContext(saved=event.full_result_path))
    out.write(f"[{event.outcome.name} -> {shown.status or 'ok'}]\n")
    Console(file=out, color_system=None, highlight=False, width=100).print(shown.body)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ThauError) else f"unexpected {type(exc).__name__}: {text}"


def _stream_failed(stream: EventStream, exc: BaseException) -> int:
    """A failure before the turn began: the stream still ends with its ``error`` event."""
    error = _failure(exc)
    stream.end(error=error)
    print(f"thau-chat: error: {error}", file=sys.stderr)
    return 1

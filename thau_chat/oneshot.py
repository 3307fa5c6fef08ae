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


def _call_record(event: ToolFinished) -> dict[str, Any]:
    outcome = event.outcome
    return {
        "name": outcome.name,
        "arguments": getattr(event.call, "arguments", None),
        "raw": event.call.raw,
        "ok": outcome.ok,
        "result": outcome.result,
        "error": outcome.error,
        "elapsed_s": round(outcome.elapsed_s, 4),
        "full_result_path": str(event.full_result_path) if event.full_result_path else None,
    }


def run_once(settings: Settings, message: str, *, as_json: bool, load: str | None = None) -> int:
    text = read_message(message)
    if not text.strip():
        print("thau-chat: error: the message is empty", file=sys.stderr)
        return 2
    folder = settings.data_dir / "conversations"
    conv = Conversation.load(folder, load) if load else Conversation(folder)
    session = build_session(settings, approver=terminal_approver)
    if not as_json:
        print(session.selection.note, file=sys.stderr)
    out = sys.stdout
    calls: list[dict[str, Any]] = []
    answer: list[str] = []
    timings: dict[str, Any] = {}
    error: str | None = None
    try:
        for event in session.agent.run_turn(conv.messages, text):
            if isinstance(event, TextDelta):
                answer.append(event.text)
                if not as_json:
                    out.write(event.text)
                    out.flush()
            elif isinstance(event, ToolRequested) and not as_json:
                out.write(f"\n[{event.call.name}] {dumps(event.call.arguments)}\n")
            elif isinstance(event, ToolFinished):
                calls.append(_call_record(event))
                answer.clear()
                if not as_json:
                    outcome = event.outcome
                    shown = dumps(outcome.result) if outcome.ok else f"error: {outcome.error}"
                    if len(shown) > 2000:
                        shown = shown[:2000] + " ..."
                    status = "ok" if outcome.ok else "failed"
                    out.write(f"[{outcome.name} -> {status}] {shown}\n")
            elif isinstance(event, Notice) and not as_json:
                print(event.message, file=sys.stderr)
            elif isinstance(event, TurnDone):
                first = event.first_token_s
                timings = {
                    "total_s": round(event.elapsed_s, 4),
                    "first_token_s": None if first is None else round(first, 4),
                    "steps": event.steps,
                    **event.stats,
                }
    except ThauError as exc:
        error = " ".join(str(exc).split())
    finally:
        if conv.messages:
            conv.save()
    if as_json:
        backend = session.selection.backend
        adapter = getattr(backend, "adapter_path", None)
        doc = {
            "backend": backend.name,
            "model": backend.model,
            "adapter": str(adapter) if adapter else None,
            "answer": "".join(answer).strip(),
            "messages": conv.messages,
            "tool_calls": calls,
            "timings": timings,
            "conversation": str(conv.path),
            "error": error,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    elif not error:
        out.write("\n")
    if error:
        print(f"thau-chat: error: {error}", file=sys.stderr)
        return 1
    return 0

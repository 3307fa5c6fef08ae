"""Corrections from a conversation for the training queue: ``/good``, ``/fix`` and
``thau-train add --from-conversation``.

Nothing leaves a conversation unless the person asks. An example keeps the turn's user
message, the earlier turns the model saw (the oldest dropped first when there are more
than an example holds), the system prompt the chat used, and in ``metadata`` where it
comes from (``source: "chat"``) and the backend, model and adapter that wrote the
original reply. It passes the queue's own validation (:func:`thau.train_queue.normalize`,
as the REST API does), and a fix's tool calls their tool's argument model; what fails is
refused with the reason and nothing is stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from thau.chat.conversation import Conversation
from thau.chat.parser import TextChunk, ToolCall, ToolCallError, ToolCallParser
from thau.errors import ThauError, ToolError
from thau.prompt_format import TOOL_CALL_RE, TOOL_OPEN, Message, format_tool_call, message_text
from thau.tools.registry import ToolRegistry
from thau.train_queue import MAX_MESSAGES, Example, InvalidExample, normalize

FIX_USAGE = (
    "a fix is the right reply: an answer, a tool call "
    '(<TOOL:name>{"arg": "value"}</TOOL>), "no tool" (the model\'s text without its '
    'call) or "no tool: ANSWER"'
)
NO_TOOL_WORDS = ("no tool", "no-tool", "sin herramienta")
INTERRUPTED = " [interrupted]"  # how the agent marks a reply cut short
ORIGINAL_CHARS = 2000  # of the original reply, kept in a fix's metadata

FixKind = Literal["answer", "tool_call", "no_tool"]


class FeedbackError(ThauError):
    """A correction that cannot be queued; the message says why and what to do."""


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation: a user message and the replies up to the next one."""

    number: int  # 1-based: the how-manyth user message
    start: int  # index of the user message
    end: int  # index after the turn's last message


@dataclass(frozen=True)
class Fix:
    """The right reply a person wrote, checked and in canonical form."""

    content: str
    kind: FixKind
    tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class Correction:
    """An example ready for the queue, and what it is, for the confirmation line."""

    example: Example
    turn: Turn
    fix: Fix | None
    earlier: int  # messages of earlier turns kept as context


@dataclass(frozen=True)
class Queued:
    """What the queue did with a correction."""

    id: int
    new: bool
    pending: int
    service: bool  # a training service is set up to train on it


# -- turns -----------------------------------------------------------------------------------
def turns(messages: Sequence[Message]) -> list[Turn]:
    """Every turn of ``messages``, oldest first."""
    starts = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    ends = [*starts[1:], len(messages)] if starts else []
    return [Turn(n, s, e) for n, (s, e) in enumerate(zip(starts, ends, strict=True), 1)]


def pick_turn(messages: Sequence[Message], number: int | None = None) -> Turn:
    """Turn ``number`` (1-based), or the last one."""
    found = turns(messages)
    if not found:
        raise FeedbackError("nothing to queue: the conversation has no message of yours yet")
    if number is None:
        return found[-1]
    if not 1 <= number <= len(found):
        raise FeedbackError(f"no turn {number}: this conversation has turns 1 to {len(found)}")
    return found[number - 1]


# -- fixes -----------------------------------------------------------------------------------
def text_without_calls(reply: Sequence[Message]) -> str:
    """What the model wrote in ``reply`` besides its tool calls."""
    texts = []
    for message in reply:
        if message.get("role") == "assistant":
            content = (message.get("content") or "").removesuffix(INTERRUPTED)
            texts.append(TOOL_CALL_RE.sub("", content).strip())
    return "\n\n".join(text for text in texts if text)


def _no_tool_answer(text: str) -> str | None:
    """The answer after a ``no tool`` shortcut ("" for the bare shortcut), else ``None``."""
    lowered = text.lower()
    for words in NO_TOOL_WORDS:
        if lowered.startswith(words):
            rest = text[len(words) :]
            if not rest.strip():
                return ""
            if rest.lstrip()[:1] in (":", "-", "–", "—"):
                return rest.lstrip()[1:].strip()
    return None


def _json_problem(body: str) -> str:
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at character {exc.pos + 1}"
    return "it is not a JSON object"


def canonical_calls(text: str, registry: ToolRegistry) -> tuple[str, tuple[str, ...]]:
    """``text`` with each tool call checked against its tool and written canonically;
    the names of the tools it calls."""
    parser = ToolCallParser()
    parts: list[str] = []
    prose: list[str] = []
    names: list[str] = []
    for event in [*parser.feed(text), *parser.close()]:
        if isinstance(event, TextChunk):
            parts.append(event.text)
            prose.append(event.text)
        elif isinstance(event, ToolCallError):
            raise FeedbackError(f"the {event.name} call is not valid: {event.error}")
        elif isinstance(event, ToolCall):
            if event.repaired:
                problem = _json_problem(event.raw.strip())
                raise FeedbackError(f"the {event.name} call's body is not valid JSON: {problem}")
            try:
                registry.validate(event.name, event.arguments)
            except ToolError as exc:
                raise FeedbackError(str(exc)) from None
            parts.append(format_tool_call(event.name, event.arguments))
            names.append(event.name)
    if TOOL_OPEN in "".join(prose) or not names:
        raise FeedbackError(
            'not a tool call: write <TOOL:name>{"arg": "value"}</TOOL> with the name of a tool '
            f"({', '.join(registry.names()) or 'none installed'})"
        )
    return "".join(parts).strip(), tuple(names)


def parse_fix(text: str, registry: ToolRegistry, reply: Sequence[Message] = ()) -> Fix:
    """The right reply ``text`` stands for: an answer, tool calls, or a ``no tool``
    shortcut (with an answer, or keeping the text of ``reply`` without its calls)."""
    text = text.strip()
    if not text:
        raise FeedbackError(f"the fix is empty; {FIX_USAGE}")
    answer = _no_tool_answer(text)
    if answer is not None:
        answer = answer or text_without_calls(reply)
        if not answer:
            raise FeedbackError(
                "the reply was only a tool call, so there is no text to keep; "
                'write the answer: "no tool: ANSWER"'
            )
        if TOOL_OPEN in answer:
            raise FeedbackError('a "no tool" fix cannot hold a tool call')
        return Fix(answer, "no_tool")
    if TOOL_OPEN not in text:
        return Fix(text, "answer")
    content, names = canonical_calls(text, registry)
    return Fix(content, "tool_call", names)


# -- examples --------------------------------------------------------------------------------
def _check_reply(reply: Sequence[Message], turn: Turn, how: str) -> None:
    """A reply that may be queued as it is: finished, not interrupted, ending with the
    model's words. ``how`` says how to give a fix instead."""
    again = f"; give the right one with {how}"
    said = [m for m in reply if m.get("role") == "assistant"]
    if not said:
        raise FeedbackError(f"turn {turn.number} has no reply to queue{again}")
    if any((m.get("content") or "").endswith(INTERRUPTED) for m in said):
        raise FeedbackError(f"the reply to turn {turn.number} was interrupted{again}")
    if reply[-1].get("role") != "assistant" or not message_text(reply[-1]).strip():
        raise FeedbackError(f"the reply to turn {turn.number} did not finish{again}")


def _context(earlier: Sequence[Message], room: int) -> list[Message]:
    """The earlier turns the reply depended on, oldest turns dropped to fit ``room``."""
    kept = [
        m
        for m in earlier
        if m.get("role") != "system" and (m.get("role") != "assistant" or message_text(m))
    ]
    while len(kept) > max(room, 0):
        later = (i for i, m in enumerate(kept) if i > 0 and m.get("role") == "user")
        kept = kept[next(later, len(kept)) :]
    return kept


def _metadata(
    conversation: Conversation,
    turn: Turn,
    fix: Fix | None,
    reply: Sequence[Message],
    run: dict[str, Any],
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": "chat",
        "kind": "fix" if fix else "good",
        "conversation": conversation.id,
        "turn": turn.number,
    }
    for key in ("backend", "model", "adapter", "adapter_version"):
        meta[key] = run.get(key)
    if fix is not None:
        meta["fix"] = fix.kind
        original = "\n".join(message_text(m) for m in reply if m.get("role") == "assistant")
        meta["original"] = original[:ORIGINAL_CHARS]
    return meta


def correction(
    conversation: Conversation,
    registry: ToolRegistry,
    *,
    fix: str | None = None,
    turn: int | None = None,
    how: str = "/fix TEXT",
) -> Correction:
    """The example for turn ``turn`` (the last by default) of ``conversation``: its reply
    as it was, or ``fix`` (see :func:`parse_fix`) in its place. ``how`` names the way to
    give a fix, for the messages."""
    messages = conversation.messages
    picked = pick_turn(messages, turn)
    reply = messages[picked.start + 1 : picked.end]
    parsed = parse_fix(fix, registry, reply) if fix is not None else None
    if parsed is None:
        _check_reply(reply, picked, how)
        answer: list[Message] = list(reply)
    else:
        answer = [{"role": "assistant", "content": parsed.content}]
    run = conversation.run_at(picked.start + 1) or {}  # +1: a /retry records after the user
    system = run.get("system_prompt") or conversation.system
    head: list[Message] = [{"role": "system", "content": system}] if system else []
    room = MAX_MESSAGES - len(head) - 1 - len(answer)
    context = _context(messages[: picked.start], room)
    record = {
        "messages": [*head, *context, messages[picked.start], *answer],
        "metadata": _metadata(conversation, picked, parsed, reply, run),
    }
    try:
        example = normalize(record)
    except InvalidExample as exc:
        raise FeedbackError(f"turn {picked.number} cannot be queued: {exc}") from None
    return Correction(example, picked, parsed, len(context))


# -- the queue -------------------------------------------------------------------------------
def queue_example(example: Example, data_dir: Path) -> Queued:
    """Add ``example`` to the training queue of ``data_dir`` (there whether or not the
    service is set up yet: ``thau-train init`` keeps it)."""
    from thau.train_queue import ExampleStore
    from thau.train_service_files import ServicePaths

    paths = ServicePaths.in_data_dir(data_dir)
    try:
        store = ExampleStore(paths.queue)
        try:
            new_id, new = store.add(example)
            pending = store.counts()["pending"]
        finally:
            store.close()
    except (sqlite3.Error, OSError) as exc:
        raise FeedbackError(f"cannot write the training queue {paths.queue}: {exc}") from None
    return Queued(new_id, new, pending, paths.config.is_file())


def confirmation(done: Correction, queued: Queued) -> str:
    """One line: what was queued, under which id, and what comes next."""
    if not queued.new:
        return f"already queued as example {queued.id} · {queued.pending} pending"
    n = done.turn.number
    fix = done.fix
    if fix is None:
        what = f"turn {n} as it was"
    elif fix.kind == "tool_call":
        what = f"turn {n} with the call to {', '.join(fix.tools)}"
    elif fix.kind == "no_tool":
        what = f"turn {n} answered without a tool"
    else:
        what = f"turn {n} with your answer"
    kept = f"{done.earlier} earlier message{'' if done.earlier == 1 else 's'} kept"
    line = f"queued example {queued.id} for training: {what}, {kept} · {queued.pending} pending"
    if not queued.service:
        line += " · no training service yet: `thau-train init` sets one up"
    return line

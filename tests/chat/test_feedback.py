"""Turning a turn of a conversation into a training example: fixes, context, checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripted import make_registry
from thau.chat.conversation import Conversation
from thau.chat.feedback import (
    FeedbackError,
    confirmation,
    correction,
    parse_fix,
    queue_example,
    turns,
)
from thau.paths import data_dir
from thau.train_queue import MAX_MESSAGES, ExampleStore
from thau.train_service_files import ServicePaths

REGISTRY = make_registry()
SYSTEM = "You are THAU. Tools: echo(text)."
RUN = {
    "backend": "embedded",
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "adapter": "/versions/v3/adapter.gguf",
    "adapter_version": "thau-135m-v3",
    "system_prompt": SYSTEM,
}
CALL_REPLY = [
    {"role": "assistant", "content": 'Let me see. <TOOL:echo>{"text": "hola"}</TOOL>'},
    {"role": "tool", "content": '{"tool":"echo","ok":true,"result":"hola"}', "tool_name": "echo"},
    {"role": "assistant", "content": "It says hola."},
]


def chat(*turns_: tuple[str, list[dict]]) -> Conversation:
    """A conversation of (user text, replies) turns, answered by :data:`RUN`."""
    conv = Conversation(data_dir() / "conversations")
    for text, replies in turns_:
        conv.note_run(RUN)
        conv.messages += [{"role": "user", "content": text}, *replies]
    return conv


def said(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_a_fix_is_an_answer_tool_calls_or_no_tool() -> None:
    assert parse_fix("  Paris.  ", REGISTRY).content == "Paris."
    fix = parse_fix('Here: <TOOL:echo>{"text":  "x", "times": 2}</TOOL>', REGISTRY)
    assert (fix.kind, fix.tools) == ("tool_call", ("echo",))
    assert fix.content == 'Here: <TOOL:echo>{"text":"x","times":2}</TOOL>'  # canonical JSON
    assert parse_fix('<TOOL:echo>{"text": "a"}', REGISTRY).content.endswith("</TOOL>")

    assert parse_fix("no tool", REGISTRY, CALL_REPLY).content == "Let me see.\n\nIt says hola."
    for text in ("no tool: Hola.", "No tool - Hola.", "sin herramienta: Hola.", "no-tool:Hola."):
        fix = parse_fix(text, REGISTRY, CALL_REPLY)
        assert (fix.kind, fix.content) == ("no_tool", "Hola."), text
    assert parse_fix("no tools were needed", REGISTRY).kind == "answer"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the fix is empty"),
        ("   ", "the fix is empty"),
        ("<TOOL:nope>{}</TOOL>", "unknown tool 'nope'; available tools: echo"),
        ('<TOOL:echo>{"text": </TOOL>', "not valid JSON: Expecting value at character 9"),
        ("<TOOL:echo>{'text': 'x'}</TOOL>", "not valid JSON: Expecting property name"),
        ("<TOOL:echo></TOOL>", "empty tool call body"),
        ('<TOOL:echo>["x"]</TOOL>', "not a JSON object"),
        ('<TOOL:echo>{"times": 9}</TOOL>', "text: Field required"),
        ("<TOOL:Echo>{}</TOOL>", "not a tool call"),
        ('no tool: <TOOL:echo>{"text": "x"}</TOOL>', "cannot hold a tool call"),
    ],
)
def test_bad_fixes_say_why(text: str, reason: str) -> None:
    with pytest.raises(FeedbackError) as caught:
        parse_fix(text, REGISTRY, CALL_REPLY)
    assert reason in str(caught.value)


def test_no_tool_on_a_bare_call_asks_for_the_answer() -> None:
    with pytest.raises(FeedbackError, match='write the answer: "no tool: ANSWER"'):
        parse_fix("no tool", REGISTRY, said('<TOOL:echo>{"text": "x"}</TOOL>'))


def test_an_example_keeps_context_system_prompt_and_where_it_came_from() -> None:
    conv = chat(("hi", said("Hello!")), ("echo hola", CALL_REPLY))
    done = correction(conv, REGISTRY, fix="no tool: hola")
    messages = done.example.messages
    assert messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "echo hola"},
        {"role": "assistant", "content": "hola"},
    ]
    meta = done.example.metadata
    assert meta["source"] == "chat" and meta["kind"] == "fix" and meta["fix"] == "no_tool"
    assert meta["conversation"] == conv.id and meta["turn"] == 2
    assert (meta["model"], meta["adapter"], meta["adapter_version"]) == (
        RUN["model"],
        RUN["adapter"],
        "thau-135m-v3",
    )
    assert meta["original"].startswith('Let me see. <TOOL:echo>{"text": "hola"}</TOOL>')

    good = correction(conv, REGISTRY)  # as it was: the call, its result and the answer
    assert good.example.messages[3:] == [{"role": "user", "content": "echo hola"}, *CALL_REPLY]
    assert good.example.metadata["kind"] == "good" and "original" not in good.example.metadata

    first = correction(conv, REGISTRY, turn=1)  # an earlier turn: only what came before it
    assert first.example.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
    ]


def test_the_run_that_wrote_the_turn_is_named() -> None:
    conv = chat(("one", said("1")))
    conv.note_run({**RUN, "model": "other"})  # /model other, then a second turn
    conv.messages += [{"role": "user", "content": "two"}, *said("2")]
    assert correction(conv, REGISTRY, turn=1).example.metadata["model"] == RUN["model"]
    assert correction(conv, REGISTRY, turn=2).example.metadata["model"] == "other"
    saved = conv.save()
    loaded = Conversation.load(saved.parent, conv.id)
    assert correction(loaded, REGISTRY, turn=2).example.metadata["model"] == "other"


def test_an_old_conversation_without_runs_still_works() -> None:
    conv = Conversation(data_dir() / "conversations")
    conv.messages = [{"role": "user", "content": "hi"}, *said("Hello!")]
    done = correction(conv, REGISTRY)
    assert done.example.messages[0]["role"] == "user"  # the service adds its own prompt
    assert done.example.metadata["model"] is None


def test_long_conversations_keep_the_newest_whole_turns() -> None:
    many = [(f"question {i}", [*said(f"answer {i}")]) for i in range(40)]
    done = correction(chat(*many), REGISTRY, fix="the last answer")
    messages = done.example.messages
    assert len(messages) <= MAX_MESSAGES
    assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
    assert messages[-2:] == [
        {"role": "user", "content": "question 39"},
        {"role": "assistant", "content": "the last answer"},
    ]
    assert done.earlier == len(messages) - 3


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([], "turn 1 has no reply to queue; give the right one with /fix TEXT"),
        (said("half an ans [interrupted]"), "was interrupted"),
        (CALL_REPLY[:2], "did not finish"),
    ],
)
def test_good_needs_a_finished_reply(replies: list[dict], reason: str) -> None:
    with pytest.raises(FeedbackError) as caught:
        correction(chat(("hi", replies)), REGISTRY)
    assert reason in str(caught.value)
    assert correction(chat(("hi", replies)), REGISTRY, fix="Hello!").example  # a fix still can


def test_turns_and_their_bounds() -> None:
    conv = chat(("a", said("1")), ("b", CALL_REPLY))
    assert [(t.number, t.start, t.end) for t in turns(conv.messages)] == [(1, 0, 2), (2, 2, 6)]
    with pytest.raises(FeedbackError, match="no turn 3: this conversation has turns 1 to 2"):
        correction(conv, REGISTRY, turn=3)
    with pytest.raises(FeedbackError, match="no message of yours yet"):
        correction(chat(), REGISTRY)


def test_queueing_writes_the_service_queue_once() -> None:
    done = correction(chat(("hi", said("Hello!"))), REGISTRY)
    first = queue_example(done.example, data_dir())
    assert (first.new, first.pending, first.service) == (True, 1, False)
    line = confirmation(done, first)
    assert line.startswith("queued example 1 for training: turn 1 as it was, 0 earlier messages")
    assert "`thau-train init`" in line and "\n" not in line
    again = queue_example(done.example, data_dir())
    assert (again.id, again.new) == (first.id, False)
    assert confirmation(done, again) == "already queued as example 1 · 1 pending"

    store = ExampleStore(ServicePaths.default().queue)
    [row] = store.select("pending")
    store.close()
    assert row.example.messages == done.example.messages
    assert json.loads(json.dumps(row.example.metadata))["source"] == "chat"


def test_a_queue_that_cannot_be_written_loses_nothing_and_says_so(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data dir should be", "utf-8")
    done = correction(chat(("hi", said("Hello!"))), REGISTRY)
    with pytest.raises(FeedbackError, match="cannot write the training queue"):
        queue_example(done.example, blocked)


def test_queueing_and_choosing_the_adapter_stay_light() -> None:
    """The chat queues and picks the promoted adapter without the training part (torch)."""
    code = (
        "import sys\n"
        "from thau.chat import commands, feedback, repl\n"
        "from thau.chat.adapters import choose_adapter\n"
        "from thau.chat.conversation import Conversation\n"
        "from thau.paths import data_dir\n"
        "from thau.tools.registry import ToolRegistry\n"
        "choose_adapter(None, None, data_dir())\n"
        "conv = Conversation(data_dir() / 'conversations')\n"
        "conv.messages = [{'role': 'user', 'content': 'hi'}]\n"
        "conv.messages.append({'role': 'assistant', 'content': 'Hi'})\n"
        "done = feedback.correction(conv, ToolRegistry())\n"
        "assert feedback.queue_example(done.example, data_dir()).new\n"
        "heavy = {'torch', 'transformers', 'fastapi', 'thau.train'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""``/good`` and ``/fix`` in the chat: what reaches the training queue, and what never does."""

from __future__ import annotations

from tests.chat.repl.helpers import run_chat
from thau.chat import commands
from thau.train_queue import ExampleStore, StoredExample
from thau.train_service_files import ServicePaths

EXIT = "\x04"  # Ctrl-D
CALL = '<TOOL:echo>{"text": "a cat"}</TOOL>'


def queued() -> list[StoredExample]:
    """The pending examples of the data dir's queue (none when it was never written)."""
    path = ServicePaths.default().queue
    if not path.exists():
        return []
    store = ExampleStore(path)
    try:
        return store.select("pending")
    finally:
        store.close()


def test_fix_queues_the_turn_with_its_context_and_says_so_in_one_line() -> None:
    chat = run_chat(
        'hi\rdraw a cat\r/fix <TOOL:echo>{"text":  "a cat"}</TOOL>\r' + EXIT,
        [["Hello!"], ["I cannot draw."]],
    )
    [row] = queued()
    system = chat.requests()[-1]["messages"][0]
    assert system["role"] == "system"  # the prompt the chat used, not the service's own
    assert row.example.messages == [
        system,
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "draw a cat"},
        {"role": "assistant", "content": '<TOOL:echo>{"text":"a cat"}</TOOL>'},
    ]
    meta = row.example.metadata
    assert (meta["source"], meta["kind"], meta["fix"]) == ("chat", "fix", "tool_call")
    assert (meta["backend"], meta["model"], meta["adapter"]) == ("scripted", "thau-test", None)
    assert meta["original"] == "I cannot draw."
    assert meta["conversation"] == chat.saved()[-1]["id"] and meta["turn"] == 2
    line = "queued example 1 for training: turn 2 with the call to echo, 2 earlier messages kept"
    assert line in chat.screen


def test_good_and_no_tool_shortcuts() -> None:
    run_chat(
        f"echo a cat\r/good\r/good\r/fix no tool\r/fix no tool: A cat.\r{EXIT}",
        [[f"Sure. {CALL}"], ["Here it is."]],
    )
    good, kept, answered = queued()
    assert [m["role"] for m in good.example.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert good.example.metadata["kind"] == "good"
    assert kept.example.messages[-1]["content"] == "Sure.\n\nHere it is."
    assert answered.example.messages[-1]["content"] == "A cat."


def test_bad_fixes_are_refused_with_the_reason_and_store_nothing() -> None:
    keys = [
        "/good",  # nothing said yet
        "draw",
        "/fix",
        "/fix <TOOL:nope>{}</TOOL>",
        '/fix <TOOL:echo>{"text": </TOOL>',
        '/fix <TOOL:echo>{"times": 9}</TOOL>',
        "/good now",
    ]
    chat = run_chat("\r".join(keys) + "\r" + EXIT, [["Sure."]])
    screen = " ".join(chat.screen.split())
    assert "error: nothing to queue: the conversation has no message of yours yet" in screen
    assert "error: the fix is empty; a fix is the right reply" in screen
    assert "error: unknown tool 'nope'; available tools: echo, guarded, boom, big" in screen
    assert "the echo call's body is not valid JSON: Expecting value at character 9" in screen
    assert "echo: invalid arguments (text: Field required; times:" in screen
    assert screen.count("(nothing was queued)") == 5
    assert "/good takes no text" in screen
    assert queued() == []
    assert not ServicePaths.default().queue.exists()


def test_nothing_is_queued_without_a_command() -> None:
    chat = run_chat("hi\rdraw\r/retry\r/clear\r" + EXIT, [["Hello!"], ["Sure."], ["Again."]])
    assert len(chat.saved()) == 1
    assert not ServicePaths.default().root.exists()


def test_the_commands_are_listed_and_complete() -> None:
    assert {"/good", "/fix"} <= set(commands.names())
    chat = run_chat("/help\r" + EXIT)
    assert "/fix TEXT" in chat.screen and "/good" in chat.screen

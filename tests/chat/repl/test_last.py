"""``/last``: the last turn's tool results as full JSON, one command away."""

from __future__ import annotations

from tests.chat.repl.helpers import run_chat

EXIT = "\x04"


def flat(screen: str) -> str:
    return screen.replace("\n", "").replace("│", "").replace(" ", "")


def test_last_before_any_tool_says_so() -> None:
    chat = run_chat("/last\rhola\r/last\r" + EXIT, [["hola"]])
    assert chat.screen.count("No tool has run in this conversation yet.") == 2


def test_last_shows_the_results_of_the_last_turn_that_ran_tools() -> None:
    replies = [
        ['<TOOL:echo>{"text": "ping"}</TOOL><TOOL:echo>{"text": "pong", "times": 2}</TOOL>'],
        ["two echoes"],
        ["no tools this time"],
    ]
    chat = run_chat("echo\rchat\r/last\r" + EXIT, replies)
    before, after = chat.screen.split("no tools this time")
    assert '"echo": "ping"' not in before  # readable by default
    assert after.count("echo full result") == 2
    assert '"arguments": {' in after and '"text": "ping"' in after
    assert '"echo": "ping"' in after and '"echo": "pongpong"' in after
    assert '"ok": true' in after and '"elapsed_s"' in after


def test_last_shows_errors_and_the_raw_text_of_a_malformed_call() -> None:
    chat = run_chat("go\r/last\r" + EXIT, [["<TOOL:echo>{{{not json</TOOL>"], ["sorry"]])
    after = chat.screen.split("sorry")[1]
    assert '"ok": false' in after and "malformed tool call" in after
    assert '"raw": "{{{not json"' in after


def test_a_huge_result_is_cut_and_points_at_the_saved_file() -> None:
    chat = run_chat("go\r/last\r" + EXIT, [['<TOOL:big>{"size": 100000}</TOOL>'], ["big"]])
    (saved,) = (chat.settings.data_dir / "tool_results").glob("big-*.json")
    after = flat(chat.screen.split("big full result", 1)[1])
    assert f"morecharactersnotshown;allofitisin{saved}]" in after
    assert len(chat.screen) < 40_000


def test_after_load_last_shows_what_the_model_saw() -> None:
    first = run_chat("echo\r" + EXIT, [['<TOOL:echo>{"text": "kept"}</TOOL>'], ["done"]])
    conv_id = first.saved()[-1]["id"]
    again = run_chat(f"/load {conv_id}\r/last\r" + EXIT)
    after = again.screen.split(f"Loaded {conv_id}")[1]
    assert "echo full result" in after and '"echo": "kept"' in after
    assert '"tool": "echo"' in after


def test_last_belongs_to_the_conversation_on_screen() -> None:
    chat = run_chat("echo\r/clear\r/last\r" + EXIT, [['<TOOL:echo>{"text": "a"}</TOOL>'], ["ok"]])
    assert "No tool has run in this conversation yet." in chat.screen.split("New conversation")[1]

"""Turns in-process: streaming, tool panels, approval, Ctrl-C and every failure."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from tests.chat.repl.helpers import run_chat
from tests.scripted import ScriptedBackend, make_registry
from thau.chat import render
from thau.chat.agent import TextDelta
from thau.chat.backends import Selection
from thau.chat.backends.base import Chunk
from thau.chat.config import Settings, load_settings
from thau.chat.repl import ChatRepl, PlainReader
from thau.errors import (
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)

EXIT = "\x04"


def test_answer_is_shown_as_markdown_and_saved_with_the_note() -> None:
    chat = run_chat("hola\r" + EXIT, [["# Title\n\n", "Some **bold** ", "text"]])
    assert "Using scripted thau-test." in chat.screen
    assert "Title" in chat.screen and "Some bold text" in chat.screen
    assert "**" not in chat.screen  # rendered, not raw
    assert chat.messages() == [
        {"role": "user", "content": "hola"},
        {"role": "assistant", "content": "# Title\n\nSome **bold** text"},
    ]
    assert "Conversation saved:" in chat.screen
    assert (chat.settings.data_dir / "history").read_text().count("+hola") == 1


def test_thinking_spinner_then_streamed_answer_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    run_chat("hi\r" + EXIT, [["streamed ", "answer"]], console=console)
    screen = out.getvalue()
    assert "thinking…" in screen
    assert screen.index("thinking…") < screen.index("streamed answer")


def test_alt_enter_and_paste_make_one_multiline_message() -> None:
    keys = "first\x1b\rsecond\r" + "\x1b[200~pasted 1\npasted 2\x1b[201~\r" + EXIT
    chat = run_chat(keys, [["a"], ["b"]])
    users = [m["content"] for m in chat.messages() if m["role"] == "user"]
    assert users == ["first\nsecond", "pasted 1\npasted 2"]


def test_tool_call_panel_then_result_then_answer() -> None:
    replies = [['Let me. <TOOL:echo>{"text": "ping", "times": 2}</TOOL>'], ["Got pingping."]]
    chat = run_chat("echo it\r" + EXIT, replies)
    screen = chat.screen
    assert "tool echo" in screen and "times: 2" in screen
    assert "echo ok" in screen and "echo: pingping" in screen
    assert '"echo"' not in screen and '"times"' not in screen  # no raw JSON by default
    assert screen.index("tool echo") < screen.index("echo ok") < screen.index("Got pingping.")
    roles = [m["role"] for m in chat.messages()]
    assert roles == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize("answer", ["y", "sí", "yes"])
def test_approval_yes_runs_the_tool(answer: str) -> None:
    replies = [['<TOOL:guarded>{"text": "import os\\nprint(os.getcwd())"}</TOOL>'], ["done"]]
    chat = run_chat(f"run\r{answer}\r" + EXIT, replies)
    assert "guarded wants to run" in chat.screen
    assert "print(os.getcwd())" in chat.screen
    assert "approved" in chat.screen
    tool = next(m for m in chat.messages() if m["role"] == "tool")
    assert '"ok":true' in tool["content"].replace(" ", "") and '"approved":true' in tool[
        "content"
    ].replace(" ", "")


@pytest.mark.parametrize("answer", ["n", "", "whatever"])
def test_approval_no_refuses_the_tool(answer: str) -> None:
    replies = [['<TOOL:guarded>{"text": "rm -rf /"}</TOOL>'], ["ok, not run"]]
    chat = run_chat(f"run\r{answer}\r" + EXIT, replies)
    assert "declined" in chat.screen
    tool = next(m for m in chat.messages() if m["role"] == "tool")
    assert "not approved" in tool["content"]
    assert chat.messages()[-1]["content"] == "ok, not run"


def test_yes_setting_skips_the_question() -> None:
    replies = [['<TOOL:guarded>{"text": "1"}</TOOL>'], ["ran"]]
    chat = run_chat("run\r" + EXIT, replies, yes=True)
    assert "wants to run" not in chat.screen
    assert '"approved":true' in next(m for m in chat.messages() if m["role"] == "tool")[
        "content"
    ].replace(" ", "")


def test_ctrl_c_in_the_stream_keeps_the_partial_answer_and_goes_on() -> None:
    replies = [["partial ", "answer", KeyboardInterrupt()], ["second answer"]]
    chat = run_chat("slow one\rnext\r" + EXIT, replies)
    assert "[interrupted]" in chat.screen
    assert [m["content"] for m in chat.messages()] == [
        "slow one",
        "partial answer [interrupted]",
        "next",
        "second answer",
    ]


def test_ctrl_c_while_showing_closes_the_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    handle = render.TurnView.handle

    def interrupt_on_second_piece(self: render.TurnView, event: object) -> None:
        if isinstance(event, TextDelta):
            seen.append(event.text)
            if len(seen) == 2:
                raise KeyboardInterrupt
        handle(self, event)

    monkeypatch.setattr(render.TurnView, "handle", interrupt_on_second_piece)
    chat = run_chat("go\r" + EXIT, [["one ", "two ", "three"]])
    assert seen == ["one ", "two "]
    assert chat.messages()[-1] == {"role": "assistant", "content": "one two  [interrupted]"}


def test_ctrl_c_at_the_prompt_does_not_leave() -> None:
    chat = run_chat("\x03half typed\x03hello\r" + EXIT, [["still here"]])
    assert chat.screen.count("Ctrl-D or /exit leaves") == 2
    assert [m["content"] for m in chat.messages()] == ["hello", "still here"]


def test_backend_down_at_start_is_retried_on_each_message() -> None:
    attempts: list[int] = []

    def select(settings: Settings) -> Selection:
        attempts.append(1)
        if len(attempts) < 3:
            raise BackendUnavailable("Ollama is not answering at http://x. Start it.")
        return Selection(ScriptedBackend([["up now"]]), "connected")

    chat = run_chat("first\rsecond\r/model\r" + EXIT, create_selection=select)
    assert chat.screen.count("error: Ollama is not answering at http://x. Start it.") == 2
    assert "tried again on each message" in chat.screen
    assert chat.screen.count("The message was not sent") == 1
    assert [m["content"] for m in chat.messages()] == ["second", "up now"]
    assert "connected" in chat.screen and "up now" in chat.screen
    assert len(attempts) == 3


@pytest.mark.parametrize(
    "failure",
    [
        BackendUnavailable("Ollama is not answering; start it with `ollama serve`"),
        ModelNotFound("model 'x' not found; run `ollama pull x`"),
        BackendTimeout("no answer in 120 s"),
        StreamInterrupted("the stream broke off"),
    ],
)
def test_backend_errors_are_shown_and_the_chat_goes_on(failure: Exception) -> None:
    chat = run_chat("one\rtwo\r" + EXIT, [["half ", failure], ["fine"]])
    assert f"error: {failure}" in chat.screen
    assert [m["content"] for m in chat.messages()] == [
        "one",
        "half  [interrupted]",
        "two",
        "fine",
    ]


def test_an_unexpected_exception_does_not_end_the_chat() -> None:
    chat = run_chat("one\rtwo\r" + EXIT, [[ValueError("bug below")], ["fine"]])
    assert "error: unexpected ValueError: bug below" in chat.screen
    assert chat.messages()[-1]["content"] == "fine"


def test_stream_cut_inside_a_tool_call() -> None:
    replies = [['<TOOL:echo>{"text": "unfin', StreamInterrupted("cut")], ["again"]]
    chat = run_chat("go\rretry\r" + EXIT, replies)
    assert "error: cut" in chat.screen
    assert "echo ok" not in chat.screen
    contents = [m["content"] for m in chat.messages()]
    assert contents[1].endswith("[interrupted]") and contents[-1] == "again"


def test_a_tool_that_raises_is_shown_as_a_failed_result() -> None:
    chat = run_chat("go\r" + EXIT, [["<TOOL:boom>{}</TOOL>"], ["it broke"]])
    assert "boom failed" in chat.screen
    assert "RuntimeError: the tool broke" in chat.screen
    assert chat.messages()[-1]["content"] == "it broke"


def test_a_huge_result_is_cut_on_screen_and_saved_in_full() -> None:
    size = 3_000_000
    chat = run_chat("go\r" + EXIT, [[f'<TOOL:big>{{"size": {size}}}</TOOL>'], ["big"]])
    assert len(chat.screen) < 10_000
    assert "more characters not shown; full result in" in chat.screen
    saved = list((chat.settings.data_dir / "tool_results").glob("big-*.json"))
    assert len(saved) == 1 and saved[0].stat().st_size > size
    assert str(saved[0]) in chat.screen.replace("\n", "").replace("│", "").replace(" ", "")


def test_unknown_tool_and_invalid_arguments() -> None:
    replies = [
        ['<TOOL:nope>{"a": 1}</TOOL>'],
        ["no such tool"],
        ['<TOOL:echo>{"text": "a", "times": 9}</TOOL>'],
        ["bad args"],
    ]
    chat = run_chat("one\rtwo\r" + EXIT, replies)
    assert "unknown tool 'nope'" in chat.screen
    assert "times: Input should be less than or equal to 3" in chat.screen
    assert [m["content"] for m in chat.messages()][-1] == "bad args"


def test_malformed_call_is_shown() -> None:
    chat = run_chat("one\r" + EXIT, [["<TOOL:echo>{{{not json at all</TOOL>"], ["sorry"]])
    assert "echo failed" in chat.screen or "malformed tool call" in chat.screen
    assert chat.messages()[-1]["content"] == "sorry"


def test_native_tool_calls_are_shown_too() -> None:
    call = Chunk(tool_calls=[{"name": "echo", "arguments": {"text": "n"}}])
    chat = run_chat("one\r" + EXIT, [[call], ["native done"]])
    assert "tool echo" in chat.screen and "echo: n" in chat.screen


def test_load_at_start_continues_and_a_bad_load_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = run_chat("keep me\r" + EXIT, [["kept"]])
    conv_id = first.saved()[-1]["id"]
    again = run_chat("more\r" + EXIT, [["fine"]], load=conv_id)
    assert f"Continuing {conv_id} (2 messages)" in again.screen
    assert [m["content"] for m in again.messages()] == ["keep me", "kept", "more", "fine"]
    bad = run_chat("never\r" + EXIT, load="does-not-exist")
    assert bad.rc == 1
    assert "No conversation 'does-not-exist'" in capsys.readouterr().err
    assert bad.requests() == []


def test_piped_stdin_reads_lines_and_answers_approval() -> None:
    settings = load_settings()
    backend = ScriptedBackend([['<TOOL:guarded>{"text": "x"}</TOOL>'], ["ok"], ["second"]])
    console = Console(record=True, file=io.StringIO(), width=100)
    stdin = io.StringIO("run it\ny\nagain\n")
    repl = ChatRepl(
        settings,
        console,
        PlainReader(stdin),
        registry=make_registry(),
        create_selection=lambda s: Selection(backend, "piped"),
    )
    assert repl.connect() and repl.loop() == 0
    contents = [m["content"] for m in repl.conv.messages]
    assert contents[0] == "run it" and contents[-2:] == ["again", "second"]
    assert '"approved": true' in contents[2].replace('":true', '": true')


def test_help_does_not_import_rich_or_prompt_toolkit() -> None:
    code = (
        "import sys\nfrom thau.chat.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rich', 'prompt_toolkit')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "thau-chat" in done.stdout

"""Each slash command, driven through prompt-toolkit's pipe input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from tests.chat.repl.helpers import run_chat
from tests.scripted import ScriptedBackend
from thau.chat import commands
from thau.chat.agent import TurnDone
from thau.chat.backends import Selection
from thau.chat.config import Settings
from thau.chat.render import turn_stats
from thau.chat.repl import SlashCompleter
from thau.tools import image_preview

EXIT = "\x04"  # Ctrl-D


def test_help_lists_every_command_with_its_usage() -> None:
    chat = run_chat("/help\r" + EXIT)
    for cmd in commands.COMMANDS.values():
        assert cmd.usage in chat.screen
        assert cmd.help.split("(")[0].strip() in chat.screen
    assert "Alt-Enter" in chat.screen
    assert chat.rc == 0


def test_unknown_command_names_the_commands() -> None:
    chat = run_chat("/frobnicate now\r" + EXIT)
    assert "error: unknown command /frobnicate" in chat.screen
    for name in ("/help", "/exit", "/model", "/tools", "/retry", "/open"):
        assert name in chat.screen.split("unknown command")[1]


@pytest.mark.parametrize("word", ["/exit", "/quit", "exit", "quit", "salir", "SALIR", EXIT])
def test_exit_words_and_ctrl_d_leave(word: str) -> None:
    keys = word if word == EXIT else word + "\r"
    chat = run_chat(keys + "never sent\r", [["not used"]])
    assert chat.rc == 0
    assert chat.requests() == []
    assert chat.saved() == []


@pytest.mark.parametrize("word", ["/clear", "limpiar"])
def test_clear_starts_a_new_conversation(word: str) -> None:
    chat = run_chat(f"first\r{word}\rsecond\r" + EXIT, [["one"], ["two"]])
    first, second = chat.saved()
    assert first["id"] != second["id"]
    assert [m["content"] for m in second["messages"]] == ["second", "two"]
    sent = chat.requests()[1]["messages"]
    assert "first" not in [m["content"] for m in sent]
    assert "New conversation" in chat.screen


def test_model_shows_and_switches_keeping_the_conversation() -> None:
    built: list[ScriptedBackend] = []

    def select(settings: Settings) -> Selection:
        backend = ScriptedBackend([[f"from {settings.model}"]], model=settings.model or "base")
        built.append(backend)
        return Selection(backend, f"picked {backend.model}")

    chat = run_chat(
        "/model\rhello\r/model other-model\r/model\ragain\r" + EXIT, create_selection=select
    )
    assert "model: base" in chat.screen
    assert "model: other-model" in chat.screen
    assert "picked other-model" in chat.screen
    assert [b.model for b in built] == ["base", "other-model"]
    sent = [m["content"] for m in built[1].requests[0]["messages"]]
    assert sent[1:] == ["hello", "from None", "again"]
    assert [m["content"] for m in chat.messages()][-1] == "from other-model"


def test_model_switch_failure_keeps_the_old_model() -> None:
    def select(settings: Settings) -> Selection:
        if settings.model == "missing":
            from thau.errors import ModelNotFound

            raise ModelNotFound("no model 'missing'; pull it with `ollama pull missing`")
        return Selection(ScriptedBackend([["still here"]], model="base"), "ok")

    chat = run_chat("/model missing\rhi\r" + EXIT, create_selection=select)
    assert "error: cannot switch to missing: no model 'missing'" in chat.screen
    assert chat.messages()[-1]["content"] == "still here"


def test_tools_lists_arguments_types_constraints_and_required() -> None:
    chat = run_chat("/tools\r" + EXIT)
    screen = chat.screen
    for signature in ("echo(text, times=1)", "guarded(text, times=1)", "boom()", "big(size)"):
        assert signature in screen
    row = next(line for line in screen.splitlines() if "│   times " in line)
    assert "integer" in row and ">= 1" in row and "<= 3" in row and "default 1" in row
    assert row.rstrip(" │").endswith("no")
    size_row = next(line for line in screen.splitlines() if "│   size " in line)
    assert size_row.rstrip(" │").endswith("yes")
    assert "asks for approval" in screen


def test_system_show_set_and_reset() -> None:
    chat = run_chat(
        "/system\r/system Answer like a pirate.\r/system\rhi\r/system reset\rbye\r" + EXIT,
        [["arr"], ["bye"]],
    )
    assert "system prompt (default)" in chat.screen
    default = chat.screen.split("system prompt (default)")[1].split("system prompt (custom)")[0]
    for name in ("echo", "guarded", "boom", "big"):  # the generated prompt names the tools
        assert name in default
    assert "system prompt (custom)" in chat.screen
    first, second = (r["messages"][0] for r in chat.requests())
    assert first == {"role": "system", "content": "Answer like a pirate."}
    assert second["content"] != "Answer like a pirate."
    assert "echo" in second["content"]
    assert chat.saved()[-1]["system"] is None


def test_system_prompt_is_saved_and_loaded_with_the_conversation() -> None:
    chat = run_chat("/system Be brief.\rhi\r" + EXIT, [["ok"]])
    saved = chat.saved()[-1]
    assert saved["system"] == "Be brief."
    again = run_chat("more\r" + EXIT, [["fine"]], load=saved["id"])
    assert again.requests()[0]["messages"][0]["content"] == "Be brief."


def test_save_to_a_file_and_to_its_own_place(tmp_path: Path) -> None:
    target = tmp_path / "out" / "copy.json"
    chat = run_chat(f"hi\r/save {target}\r/save\r" + EXIT, [["hello"]])
    copy = json.loads(target.read_text("utf-8"))
    assert [m["content"] for m in copy["messages"]] == ["hi", "hello"]
    assert f"Saved 2 messages to {target}" in chat.screen
    assert str(chat.folder) in chat.screen.replace("\n", "")


def test_load_lists_recent_then_loads_by_id_prefix() -> None:
    first = run_chat("remember 42\r" + EXIT, [["noted"]])
    conv_id = first.saved()[-1]["id"]
    chat = run_chat(f"/load\r/load {conv_id[:17]}\rwhat number?\r" + EXIT, [["42"]])
    assert conv_id in chat.screen
    assert "remember 42" in chat.screen
    assert f"Loaded {conv_id}: 2 messages" in chat.screen
    sent = [m["content"] for m in chat.requests()[0]["messages"][1:]]
    assert sent == ["remember 42", "noted", "what number?"]
    assert chat.saved()[-1]["id"] == conv_id  # saved back in place
    assert len(chat.saved()) == 1


def test_load_from_a_path_and_a_bad_reference(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps([{"role": "user", "content": "old"}]), "utf-8")
    chat = run_chat(f"/load {path}\r/load nope-nothing\r/load\r" + EXIT, [["x"]])
    assert "Loaded" in chat.screen and "1 messages" in chat.screen
    assert "error: No conversation 'nope-nothing'" in chat.screen


def test_load_with_nothing_saved_says_so() -> None:
    chat = run_chat("/load\r" + EXIT)
    assert "No saved conversations" in chat.screen


def test_retry_answers_the_last_message_again() -> None:
    chat = run_chat("question\r/retry\r" + EXIT, [["bad answer"], ["better answer"]])
    assert [m["content"] for m in chat.messages()] == ["question", "better answer"]
    retried = chat.requests()[1]["messages"]
    assert [m["content"] for m in retried[1:]] == ["question"]
    assert "better answer" in chat.screen


def test_retry_drops_tool_steps_too() -> None:
    replies = [['<TOOL:echo>{"text": "a"}</TOOL>'], ["used echo"], ["direct"]]
    chat = run_chat("go\r/retry\r" + EXIT, replies)
    assert [m["role"] for m in chat.messages()] == ["user", "assistant"]
    assert chat.messages()[-1]["content"] == "direct"


def test_retry_with_nothing_to_retry() -> None:
    chat = run_chat("/retry\r" + EXIT)
    assert "Nothing to retry" in chat.screen
    assert chat.requests() == []


def test_open_opens_the_last_image_from_a_tool_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    older, newer = tmp_path / "a.png", tmp_path / "b.png"
    for image in (older, newer):
        image.write_bytes(b"\x89PNG\r\n\x1a\n")
    opened: list[Path] = []
    monkeypatch.setattr(image_preview, "open_image", lambda p: opened.append(p) or True)
    replies = [
        [f'<TOOL:echo>{{"text": "{older}"}}</TOOL>'],
        ["first"],
        [f'<TOOL:echo>{{"text": "{newer}"}}</TOOL>'],
        ["second"],
    ]
    chat = run_chat("one\rtwo\r/open\r" + EXIT, replies)
    assert opened == [newer]
    assert f"Opened {newer}" in chat.screen


def test_open_without_an_image() -> None:
    chat = run_chat("/open\r" + EXIT)
    assert "No image in this conversation yet." in chat.screen


def test_tab_completes_slash_commands() -> None:
    completer = SlashCompleter(commands.names())
    words = [c.text for c in completer.get_completions(Document("/mo"), CompleteEvent(True))]
    assert words == ["/model"]
    assert list(completer.get_completions(Document("hello /mo"), CompleteEvent(True))) == []
    chat = run_chat("/too", later=["\t", "\r", EXIT])
    assert "echo(text, times=1)" in chat.screen


def test_verbose_prints_turn_timings_and_toggles() -> None:
    chat = run_chat("one\r/verbose\rtwo\r/verbose\rthree\r" + EXIT, [["a"], ["b"], ["c"]])
    first, rest = chat.screen.split("Timings and tool results' JSON after each answer: on.")
    second, third = rest.split("Timings and tool results' JSON after each answer: off.")
    assert "tokens/s" not in first and " s · " not in first
    # the scripted backend reports 1 token per reply and no duration: count, no speed
    assert "· 1 token" in second and "1 tokens" not in second and " s · first token " in second
    assert " s · " not in third


def test_verbose_flag_starts_with_timings_on() -> None:
    chat = run_chat("one\r" + EXIT, [["a"]], verbose=True)
    assert " s · first token " in chat.screen


def test_turn_stats_line_reads_each_backends_figures() -> None:
    ollama = TurnDone(2, 2.414, 0.52, {"eval_count": 37, "eval_duration": 1_737_000_000})
    assert (
        turn_stats(ollama)
        == "2.41 s · first token 0.52 s · 37 tokens, 21.3 tokens/s · 2 model calls"
    )
    openai = TurnDone(
        1, 1.0, None, {"eval_count": 10, "total_duration": 500_000_000, "prompt_eval_count": 80}
    )
    assert turn_stats(openai) == "1.00 s · 10 tokens, 20.0 tokens/s · prompt 80 tokens"
    assert turn_stats(TurnDone(1, 0.25, 0.1, {})) == "0.25 s · first token 0.10 s"

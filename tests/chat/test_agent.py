"""The agent loop, driven by a scripted backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import ScriptedBackend, make_registry
from thau.chat.agent import Agent, Approval, TextDelta, ToolFinished, ToolRequested, TurnDone
from thau.chat.backends.base import Chunk
from thau.errors import StreamInterrupted
from thau.prompt_format import Message
from thau.tools.registry import ToolContext


def make_agent(backend: ScriptedBackend, tmp_path: Path, **kw: Any) -> Agent:
    return Agent(backend, make_registry(), context=ToolContext(tmp_path), **kw)


def finished(events: list[object]) -> list[ToolFinished]:
    return [e for e in events if isinstance(e, ToolFinished)]


def test_plain_answer_without_tools(tmp_path: Path) -> None:
    backend = ScriptedBackend([["Hola", ", ¿qué tal?"]])
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path).run_turn(conv, "hola"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hola, ¿qué tal?"
    assert conv == [
        {"role": "user", "content": "hola"},
        {"role": "assistant", "content": "Hola, ¿qué tal?"},
    ]
    assert isinstance(events[-1], TurnDone) and events[-1].steps == 1
    system = backend.requests[0]["messages"][0]
    assert system["role"] == "system" and "<TOOL:name>" in system["content"]


def test_tool_result_goes_back_as_tool_message(tmp_path: Path) -> None:
    backend = ScriptedBackend([['<TOOL:echo>{"text": "ab", ', '"times": 2}</TOOL>'], ["abab"]])
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path).run_turn(conv, "echo ab twice"))
    (fin,) = finished(events)
    assert fin.outcome.ok and fin.outcome.result == {"echo": "abab"}
    assert conv[1]["content"] == '<TOOL:echo>{"text": "ab", "times": 2}</TOOL>'
    assert conv[2] == {
        "role": "tool",
        "content": '{"tool":"echo","ok":true,"result":{"echo":"abab"}}',
        "tool_name": "echo",
    }
    assert conv[3] == {"role": "assistant", "content": "abab"}
    assert backend.requests[1]["messages"][-1]["role"] == "tool"


def test_unknown_tool_and_invalid_args_go_back_as_errors(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        [['<TOOL:nope>{"a": 1}</TOOL><TOOL:echo>{"text": "x", "times": 9}</TOOL>'], ["ok"]]
    )
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path).run_turn(conv, "go"))
    first, second = finished(events)
    assert not first.outcome.ok and "unknown tool 'nope'" in (first.outcome.error or "")
    assert not second.outcome.ok and "times" in (second.outcome.error or "")
    payloads = [json.loads(m["content"]) for m in conv if m["role"] == "tool"]
    assert [p["ok"] for p in payloads] == [False, False]


def test_malformed_call_is_shown_and_fed_back(tmp_path: Path) -> None:
    backend = ScriptedBackend([["<TOOL:echo>not json at all</TOOL>"], ["sorry"]])
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path).run_turn(conv, "go"))
    (fin,) = finished(events)
    assert "malformed tool call" in (fin.outcome.error or "")
    assert json.loads(conv[2]["content"])["ok"] is False


def test_tool_that_raises_is_an_error_result(tmp_path: Path) -> None:
    backend = ScriptedBackend([["<TOOL:boom>{}</TOOL>"], ["it failed"]])
    events = list(make_agent(backend, tmp_path).run_turn([], "go"))
    (fin,) = finished(events)
    assert fin.outcome.error == "RuntimeError: the tool broke"


def test_huge_result_truncated_for_model_and_saved(tmp_path: Path) -> None:
    backend = ScriptedBackend([['<TOOL:big>{"size": 3000000}</TOOL>'], ["ok"]])
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path, result_limit=1000).run_turn(conv, "go"))
    (fin,) = finished(events)
    assert fin.full_result_path is not None
    saved = json.loads(fin.full_result_path.read_text())
    assert len(saved["result"]) == 3_000_000
    tool_msg = conv[2]["content"]
    assert len(tool_msg) < 1300 and json.loads(tool_msg)["truncated"] is True
    assert str(fin.full_result_path) in tool_msg


def test_identical_call_is_stopped(tmp_path: Path) -> None:
    call = '<TOOL:echo>{"text": "a"}</TOOL>'
    backend = ScriptedBackend([[call], [call], ["final"]])
    events = list(make_agent(backend, tmp_path).run_turn([], "go"))
    first, second = finished(events)
    assert first.outcome.ok
    assert not second.outcome.ok and "identical call" in (second.outcome.error or "")


def test_max_steps_then_final_answer_without_tools(tmp_path: Path) -> None:
    replies = [[f'<TOOL:echo>{{"text": "{i}"}}</TOOL>'] for i in range(3)]
    backend = ScriptedBackend([*replies, ['<TOOL:echo>{"text": "again"}</TOOL> final']])
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path, max_steps=3).run_turn(conv, "go"))
    outcomes = [f.outcome for f in finished(events)]
    assert [o.ok for o in outcomes] == [True, True, True, False]
    assert "step limit" in (outcomes[-1].error or "")
    assert len(backend.requests) == 4
    last = backend.requests[-1]["messages"][-1]
    assert last["role"] == "system" and "without calling any tool" in last["content"]
    assert isinstance(events[-1], TurnDone) and events[-1].steps == 4


def test_approval_denied_and_granted(tmp_path: Path) -> None:
    call = '<TOOL:guarded>{"text": "rm -rf"}</TOOL>'
    asked: list[str] = []

    def deny(c: Any, t: Any) -> Approval:
        asked.append(c.name)
        return Approval(False, "no thanks")

    agent = make_agent(ScriptedBackend([[call], ["ok"]]), tmp_path, approver=deny)
    (fin,) = finished(list(agent.run_turn([], "x")))
    assert asked == ["guarded"] and "not approved: no thanks" in (fin.outcome.error or "")

    agent = make_agent(ScriptedBackend([[call], ["ok"]]), tmp_path, auto_approve=True)
    (fin,) = finished(list(agent.run_turn([], "x")))
    assert fin.outcome.ok and fin.outcome.result == {"ran": "rm -rf", "approved": True}


def test_no_tools_mode(tmp_path: Path) -> None:
    backend = ScriptedBackend([['<TOOL:echo>{"text": "a"}</TOOL>'], ["ok"]])
    events = list(make_agent(backend, tmp_path, tools_enabled=False).run_turn([], "x"))
    (fin,) = finished(events)
    assert "disabled" in (fin.outcome.error or "")
    assert "<TOOL:" not in backend.requests[0]["messages"][0]["content"]


def test_stream_cut_inside_a_call_keeps_conversation(tmp_path: Path) -> None:
    cut = StreamInterrupted("the server closed the stream")
    backend = ScriptedBackend([['Voy. <TOOL:echo>{"text": "a', cut]])
    conv: list[Message] = []
    agent = make_agent(backend, tmp_path)
    with pytest.raises(StreamInterrupted):
        for event in agent.run_turn(conv, "go"):
            assert not isinstance(event, ToolRequested)  # a cut call never runs
    assert conv[0] == {"role": "user", "content": "go"}
    assert conv[1]["role"] == "assistant" and conv[1]["content"].endswith("[interrupted]")
    assert len(conv) == 2


def test_closing_the_turn_keeps_partial_answer(tmp_path: Path) -> None:
    backend = ScriptedBackend([["one ", "two ", "three"]])
    conv: list[Message] = []
    turn = make_agent(backend, tmp_path).run_turn(conv, "count")
    assert isinstance(next(turn), TextDelta)
    turn.close()  # what Ctrl-C does
    assert conv == [
        {"role": "user", "content": "count"},
        {"role": "assistant", "content": "one  [interrupted]"},
    ]


def test_native_mode_uses_schemas_and_structured_calls(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        [[Chunk(tool_calls=[{"name": "echo", "arguments": {"text": "n"}}])], ["native ok"]],
        model="qwen2.5",
    )
    conv: list[Message] = []
    events = list(make_agent(backend, tmp_path, tool_mode="native").run_turn(conv, "x"))
    assert finished(events)[0].outcome.result == {"echo": "n"}
    assert backend.requests[0]["tools"][0]["function"]["name"] == "echo"
    assert backend.requests[0]["options"].native_messages is True
    assert conv[1]["tool_calls"] == [{"name": "echo", "arguments": {"text": "n"}}]


def test_grammar_schemas_only_in_text_mode_with_tools(tmp_path: Path) -> None:
    from thau.chat.backends.base import GenerationOptions

    options = GenerationOptions(grammar_tools=True)
    backend = ScriptedBackend([["hi"]])
    list(make_agent(backend, tmp_path, options=options).run_turn([], "x"))
    sent = backend.requests[0]["options"]
    assert sent.grammar_tools and set(sent.tool_schemas) == {"echo", "guarded", "boom", "big"}
    backend = ScriptedBackend([["hi"]])
    agent = make_agent(backend, tmp_path, options=options, tools_enabled=False)
    list(agent.run_turn([], "x"))
    assert backend.requests[0]["options"].grammar_tools is False

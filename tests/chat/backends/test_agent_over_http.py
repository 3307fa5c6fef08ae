"""The real ``Agent`` over both HTTP backends and their fake servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import make_registry
from tests.servers.base import FakeServer, Reply
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI
from thau.chat.agent import Agent, TextDelta, ToolFinished, ToolStarted, TurnDone
from thau.chat.backends.ollama import OllamaBackend
from thau.chat.backends.openai_compat import OpenAIBackend
from thau.chat.parser import ToolCall
from thau.errors import StreamInterrupted
from thau.prompt_format import Message
from thau.tools.registry import ToolContext

ECHO = {"name": "echo", "arguments": {"text": "hola", "times": 2}}
ECHO_RESULT = {"echo": "holahola"}


def agent(backend: Any, tmp_path: Path, mode: str) -> Agent:
    return Agent(backend, make_registry(), context=ToolContext(tmp_path), tool_mode=mode)


def test_native_round_trip_over_ollama(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    fake_ollama.script(Reply(tool_calls=[ECHO]), Reply(["Dice ", "holahola."]))
    backend = OllamaBackend(fake_ollama.url, "qwen2.5:0.5b", 5)
    assert backend.prefers_native_tools()
    conv: list[Message] = []
    events = list(agent(backend, tmp_path, "native").run_turn(conv, "repite hola dos veces"))
    (done,) = [e for e in events if isinstance(e, ToolFinished)]
    assert done.outcome.ok and done.outcome.result == ECHO_RESULT
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Dice holahola."
    turn = events[-1]
    assert isinstance(turn, TurnDone) and turn.steps == 2
    assert turn.stats["eval_count"] == 1 + 2  # summed over both requests
    first, second = fake_ollama.chat_requests
    assert {t["function"]["name"] for t in first["tools"]} == {"echo", "guarded", "boom", "big"}
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"] == [{"function": ECHO}]
    assert tool["role"] == "tool" and tool["tool_name"] == "echo"
    assert json.loads(tool["content"]) == {"tool": "echo", "ok": True, "result": ECHO_RESULT}
    assert conv[-1] == {"role": "assistant", "content": "Dice holahola."}


def test_native_round_trip_over_openai(
    start_fake_openai: Callable[..., FakeOpenAI], tmp_path: Path
) -> None:
    server = start_fake_openai(strict_tool_messages=True, api_key="k")
    server.script(Reply(tool_calls=[ECHO], argument_pieces=4), Reply(["Listo."]))
    backend = OpenAIBackend(server.url, "qwen2.5-0.5b-instruct", "k", 5)
    conv: list[Message] = []
    events = list(agent(backend, tmp_path, "native").run_turn(conv, "repite hola"))
    (done,) = [e for e in events if isinstance(e, ToolFinished)]
    assert done.outcome.ok and done.outcome.result == ECHO_RESULT
    assert conv[-1] == {"role": "assistant", "content": "Listo."}
    call_id = conv[1]["tool_calls"][0]["id"]
    second = server.chat_requests[1]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == call_id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == ECHO["arguments"]
    assert tool["role"] == "tool" and tool["tool_call_id"] == call_id


def test_text_mode_round_trip_over_openai(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.script(['<TOOL:echo>{"text": ', '"ok"}</TOOL>'], ["fin"])
    backend = OpenAIBackend(fake_openai.url, "thau-135m", None, 5)
    assert not backend.prefers_native_tools()
    conv: list[Message] = []
    events = list(agent(backend, tmp_path, "text").run_turn(conv, "eco"))
    (done,) = [e for e in events if isinstance(e, ToolFinished)]
    assert done.outcome.result == {"echo": "ok"}
    first, second = fake_openai.chat_requests
    assert "tools" not in first
    assert second["messages"][-1] == {"role": "tool", "content": conv[2]["content"]}


def _ollama(server: FakeServer) -> Any:
    return OllamaBackend(server.url, "thau-135m", 5)


def _openai(server: FakeServer) -> Any:
    return OpenAIBackend(server.url, "thau-135m", None, 5)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_text_mode_cut_inside_a_tool_body(
    kind: str, fake_ollama: FakeOllama, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    server: FakeServer = fake_ollama if kind == "ollama" else fake_openai
    server.script(Reply(['Voy. <TOOL:echo>{"text": "ho', 'la"}</TOOL>'], cut_after=1))
    backend = _ollama(server) if kind == "ollama" else _openai(server)
    conv: list[Message] = []
    events: list[object] = []
    with pytest.raises(StreamInterrupted):
        for event in agent(backend, tmp_path, "text").run_turn(conv, "eco"):
            events.append(event)
    assert ToolStarted("echo") in events
    assert not [e for e in events if isinstance(e, ToolFinished)]  # a cut call never runs
    assert conv[-1]["role"] == "assistant"
    assert conv[-1]["content"] == 'Voy. <TOOL:echo>{"text": "ho [interrupted]'
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize("style", ["hermes", "json", "fenced"])
@pytest.mark.parametrize("mode", ["native", "text"])
def test_a_call_left_unparsed_in_ollama_content_still_runs(
    style: str, mode: str, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    fake_ollama.script(Reply(tool_calls=[ECHO], calls_as_text=style), Reply(["Dice ", "holahola."]))
    backend = OllamaBackend(fake_ollama.url, "qwen2.5:0.5b", 5)
    conv: list[Message] = []
    events = list(agent(backend, tmp_path, mode).run_turn(conv, "repite hola dos veces"))
    (done,) = [e for e in events if isinstance(e, ToolFinished)]
    assert done.outcome.ok and done.outcome.result == ECHO_RESULT
    assert isinstance(done.call, ToolCall) and done.call.syntax == style
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Dice holahola."
    first = fake_ollama.chat_requests[0]
    assert bool(first.get("tools")) == (mode == "native")
    assert "tool_calls" not in conv[1] and '"name": "echo"' in conv[1]["content"]
    assert conv[2]["role"] == "tool" and json.loads(conv[2]["content"])["ok"] is True
    assert conv[-1] == {"role": "assistant", "content": "Dice holahola."}


def test_an_unparsed_call_to_an_unknown_tool_is_reported(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    wrong = {"name": "search_web", "arguments": {"query": "x"}}
    fake_ollama.script(Reply(tool_calls=[wrong], calls_as_text="json"), Reply(["Perdón."]))
    backend = OllamaBackend(fake_ollama.url, "qwen2.5:0.5b", 5)
    conv: list[Message] = []
    events = list(agent(backend, tmp_path, "native").run_turn(conv, "busca x"))
    (done,) = [e for e in events if isinstance(e, ToolFinished)]
    assert not done.outcome.ok and "unknown tool 'search_web'" in (done.outcome.error or "")
    sent = fake_ollama.chat_requests[1]["messages"][-1]
    assert sent["role"] == "tool" and "unknown tool 'search_web'" in sent["content"]

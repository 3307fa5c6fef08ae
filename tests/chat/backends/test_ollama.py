"""OllamaBackend against the fake Ollama server: streaming, options, tools and faults."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chat.backends.conftest import HELLO
from tests.servers.base import Reply
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI
from thau.chat.backends import create_backend
from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.ollama import OllamaBackend
from thau.chat.config import load_settings
from thau.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)
from thau.prompt_format import Message

ECHO_SCHEMA = {
    "type": "function",
    "function": {
        "name": "echo",
        "description": "Echo text back.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
}


def _opts() -> GenerationOptions:
    return GenerationOptions()


def backend(server: FakeOllama | str, model: str = "thau-135m", timeout: float = 5) -> Any:
    host = server if isinstance(server, str) else server.url
    return OllamaBackend(host, model, timeout)


def test_streams_text_chunk_by_chunk_and_ends_with_stats(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(["Ho", "la", ", ¿qué tal?"])
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=GenerationOptions()))
    assert out.error is None
    assert [c.text for c in out.chunks if not c.done] == ["Ho", "la", ", ¿qué tal?"]
    assert out.chunks[-1] is out.final
    assert out.final.stats["eval_count"] == 3
    assert out.final.stats["done_reason"] == "stop"
    assert {"total_duration", "eval_duration", "prompt_eval_count"} <= set(out.final.stats)
    request = fake_ollama.last_chat
    assert request["model"] == "thau-135m" and request["stream"] is True
    assert request["messages"] == [dict(m) for m in HELLO]


def test_options_keep_alive_stop_and_seed_are_sent(fake_ollama: FakeOllama, drain) -> None:
    options = GenerationOptions(
        temperature=0.7, num_ctx=2048, max_tokens=64, stop=["</TOOL>"], seed=7, keep_alive="10m"
    )
    assert drain(backend(fake_ollama).stream_chat(HELLO, options=options)).error is None
    request = fake_ollama.last_chat
    assert request["options"] == {
        "temperature": 0.7,
        "num_ctx": 2048,
        "num_predict": 64,
        "stop": ["</TOOL>"],
        "seed": 7,
    }
    assert request["keep_alive"] == "10m"


def test_empty_stop_none_seed_and_no_limit_are_left_out(fake_ollama: FakeOllama, drain) -> None:
    options = GenerationOptions(temperature=0.0, max_tokens=None, stop=[], seed=None)
    assert drain(backend(fake_ollama).stream_chat(HELLO, options=options)).error is None
    request = fake_ollama.last_chat
    assert request["options"] == {"temperature": 0.0, "num_ctx": 4096}
    assert "keep_alive" not in request


def test_native_tool_calls(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(tool_calls=[{"name": "echo", "arguments": {"text": "hi"}}]))
    qwen = backend(fake_ollama, "qwen2.5:0.5b")
    out = drain(qwen.stream_chat(HELLO, tools=[ECHO_SCHEMA], options=GenerationOptions()))
    assert out.error is None
    assert out.tool_calls == [{"name": "echo", "arguments": {"text": "hi"}}]
    assert fake_ollama.last_chat["tools"][0]["function"]["name"] == "echo"


def test_tools_on_a_model_without_them_suggest_text_mode(fake_ollama: FakeOllama, drain) -> None:
    out = drain(backend(fake_ollama).stream_chat(HELLO, tools=[ECHO_SCHEMA], options=_opts()))
    assert type(out.error) is BackendError
    assert "--tool-mode text" in str(out.error)


HISTORY: list[Message] = [
    {"role": "user", "content": "echo hi"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "echo", "arguments": {"text": "hi"}}],
    },
    {"role": "tool", "content": '{"tool":"echo","ok":true,"result":"hi"}', "tool_name": "echo"},
]


def test_tool_round_trip_native_shape(fake_ollama: FakeOllama, drain) -> None:
    options = GenerationOptions(native_messages=True)
    out = drain(backend(fake_ollama, "qwen2.5:0.5b").stream_chat(HISTORY, options=options))
    assert out.error is None
    assistant, tool = fake_ollama.last_chat["messages"][1:]
    assert assistant["tool_calls"] == [{"function": {"name": "echo", "arguments": {"text": "hi"}}}]
    assert tool == {"role": "tool", "content": HISTORY[2]["content"], "tool_name": "echo"}


def test_tool_round_trip_text_shape(fake_ollama: FakeOllama, drain) -> None:
    call = '<TOOL:echo>{"text": "hi"}</TOOL>'
    history: list[Message] = [HISTORY[0], {"role": "assistant", "content": call}, HISTORY[2]]
    out = drain(backend(fake_ollama).stream_chat(history, options=GenerationOptions()))
    assert out.error is None
    assistant, tool = fake_ollama.last_chat["messages"][1:]
    assert assistant == {"role": "assistant", "content": call}
    assert tool["role"] == "tool" and tool["content"] == HISTORY[2]["content"]
    # a native call in the history is not sent as tool_calls in text mode
    out = drain(backend(fake_ollama).stream_chat(HISTORY, options=GenerationOptions()))
    assert "tool_calls" not in fake_ollama.last_chat["messages"][1]


def test_missing_model_says_how_to_pull_it(fake_ollama: FakeOllama, drain) -> None:
    out = drain(backend(fake_ollama, "llama3.2").stream_chat(HELLO, options=_opts()))
    assert isinstance(out.error, ModelNotFound)
    assert "`ollama pull llama3.2`" in str(out.error) and fake_ollama.url in str(out.error)
    fake_ollama.remove_model("thau-135m")
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert isinstance(out.error, ModelNotFound) and "thau-export ollama" in str(out.error)


def test_server_down_at_start(dead_url: str, drain) -> None:
    down = backend(dead_url)
    started = time.perf_counter()
    assert down.is_available() is False and down.has_model() is False
    assert down.prefers_native_tools() is False
    assert time.perf_counter() - started < 3
    out = drain(down.stream_chat(HELLO, options=_opts()))
    assert isinstance(out.error, BackendUnavailable)
    message = str(out.error)
    assert dead_url in message
    assert "Start it with `ollama serve`, or run with --backend embedded." in message


def test_unknown_host_name_is_unavailable(drain) -> None:
    out = drain(backend("http://no-such-host.invalid:11434").stream_chat(HELLO, options=_opts()))
    assert isinstance(out.error, BackendUnavailable)


def test_server_dying_mid_stream(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["one ", "two ", "three"], cut_after=2))
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert out.text == "one two " and isinstance(out.error, StreamInterrupted)


def test_stream_without_done_line_is_interrupted(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["all ", "text"], drop_final=True))
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert out.text == "all text" and isinstance(out.error, StreamInterrupted)
    assert not any(c.done for c in out.chunks)


def test_malformed_ndjson_line(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["ok ", "then"], malformed_after=1))
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert out.text == "ok " and isinstance(out.error, StreamInterrupted)
    assert "malformed" in str(out.error)


def test_slow_first_byte_times_out(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["late"], delay=2))
    started = time.perf_counter()
    out = drain(backend(fake_ollama, timeout=0.3).stream_chat(HELLO, options=_opts()))
    assert isinstance(out.error, BackendTimeout) and "THAU_TIMEOUT" in str(out.error)
    assert time.perf_counter() - started < 1.5


def test_stall_mid_stream_times_out(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["quick", "stalled"], chunk_delay=2))
    out = drain(backend(fake_ollama, timeout=0.3).stream_chat(HELLO, options=_opts()))
    assert out.text == "quick" and isinstance(out.error, BackendTimeout)


def test_server_error_500_carries_the_servers_text(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(status=500, error="llama runner process has terminated"))
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert type(out.error) is BackendError
    assert "llama runner process has terminated" in str(out.error) and "500" in str(out.error)


def test_error_inside_the_stream(fake_ollama: FakeOllama, drain) -> None:
    fake_ollama.script(Reply(["par", "tial"], stream_error_after=1, error="out of memory"))
    out = drain(backend(fake_ollama).stream_chat(HELLO, options=_opts()))
    assert out.text == "par" and isinstance(out.error, StreamInterrupted)
    assert "out of memory" in str(out.error)


def test_a_server_that_is_not_ollama(fake_openai: FakeOpenAI, drain) -> None:
    out = drain(backend(fake_openai.root).stream_chat(HELLO, options=_opts()))
    assert type(out.error) is BackendError and "does not look like Ollama" in str(out.error)


def test_probes(fake_ollama: FakeOllama) -> None:
    assert backend(fake_ollama).is_available() is True
    assert backend(fake_ollama, "thau-135m").has_model() is True  # implicit :latest
    assert backend(fake_ollama, "thau-135m:latest").has_model() is True
    assert backend(fake_ollama, "qwen2.5:0.5b").has_model() is True
    assert backend(fake_ollama, "qwen2.5").has_model() is False
    fake_ollama.add_model("llama3.1:8b", capabilities=["completion", "tools"])
    assert backend(fake_ollama, "llama3.1:8b").has_model() is True


def test_availability_probe_gives_up_after_probe_timeout(fake_ollama: FakeOllama) -> None:
    fake_ollama.overrides["/api/tags"] = Reply(delay=3)
    slow = backend(fake_ollama, timeout=60)
    started = time.perf_counter()
    assert slow.is_available() is False
    assert time.perf_counter() - started < slow.probe_timeout + 1


def test_prefers_native_tools_from_capabilities(fake_ollama: FakeOllama) -> None:
    assert backend(fake_ollama).prefers_native_tools() is False  # THAU: text protocol
    assert fake_ollama.requests_to("/api/show") == []
    qwen = backend(fake_ollama, "qwen2.5:0.5b")
    assert qwen.prefers_native_tools() is True and qwen.prefers_native_tools() is True
    assert len(fake_ollama.requests_to("/api/show")) == 1  # cached
    assert fake_ollama.requests_to("/api/show")[0].json == {"model": "qwen2.5:0.5b"}
    fake_ollama.add_model("plain:1b", capabilities=["completion"])
    assert backend(fake_ollama, "plain:1b").prefers_native_tools() is False
    assert backend(fake_ollama, "absent:1b").prefers_native_tools() is False


def test_create_backend_picks_ollama_when_it_has_the_model(fake_ollama: FakeOllama) -> None:
    selection = create_backend(load_settings(host=fake_ollama.url))
    assert selection.backend.name == "ollama"
    assert selection.backend.describe() == f"Ollama at {fake_ollama.url} (thau-135m)"


@pytest.mark.parametrize("close_after", [1, 2])
def test_closing_the_stream_early_is_clean(
    fake_ollama: FakeOllama, close_after: int, drain
) -> None:
    fake_ollama.script(Reply(["a", "b", "c", "d"]))
    stream = backend(fake_ollama).stream_chat(HELLO, options=_opts())
    got = [next(stream).text for _ in range(close_after)]
    stream.close()
    assert got == ["a", "b", "c"][:close_after]
    fake_ollama.script(["again"])  # the backend still works afterwards
    assert drain(backend(fake_ollama).stream_chat(HELLO, options=_opts())).text == "again"

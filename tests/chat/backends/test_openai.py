"""OpenAIBackend against the fake OpenAI-compatible server, and ``openai_messages``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.chat.backends.conftest import HELLO
from tests.servers.base import Reply
from tests.servers.fake_openai import FakeOpenAI
from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.openai_compat import OpenAIBackend, openai_messages
from thau.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)
from thau.prompt_format import Message

QWEN = "qwen2.5-0.5b-instruct"
ECHO_SCHEMA = {
    "type": "function",
    "function": {
        "name": "echo",
        "description": "Echo text back.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


def backend(
    host: FakeOpenAI | str, model: str = "thau-135m", key: str | None = None, timeout: float = 5
) -> OpenAIBackend:
    return OpenAIBackend(host if isinstance(host, str) else host.url, model, key, timeout)


def opts(**kw: object) -> GenerationOptions:
    return GenerationOptions(**kw)  # type: ignore[arg-type]


def test_streams_text_and_usage(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(["Ho", "la", "!"])
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert out.error is None
    assert [c.text for c in out.chunks if not c.done] == ["Ho", "la", "!"]
    assert out.chunks[-1] is out.final
    assert out.final.stats["eval_count"] == 3
    assert out.final.stats["prompt_eval_count"] == 4  # words in the two messages
    assert out.final.stats["done_reason"] == "stop"
    request = fake_openai.last_chat
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["messages"] == [dict(m) for m in HELLO]


def test_generation_options_are_sent(fake_openai: FakeOpenAI, drain) -> None:
    options = opts(temperature=0.5, max_tokens=32, stop=["</TOOL>"], seed=3)
    assert drain(backend(fake_openai).stream_chat(HELLO, options=options)).error is None
    request = fake_openai.last_chat
    assert request["temperature"] == 0.5 and request["max_tokens"] == 32
    assert request["stop"] == ["</TOOL>"] and request["seed"] == 3
    assert "tools" not in request
    options = opts(max_tokens=None, stop=[], seed=None)
    assert drain(backend(fake_openai).stream_chat(HELLO, options=options)).error is None
    assert not {"max_tokens", "stop", "seed"} & set(fake_openai.last_chat)


def test_native_tool_calls_are_assembled_from_fragments(fake_openai: FakeOpenAI, drain) -> None:
    calls = [
        {"name": "echo", "arguments": {"text": "uno, dos, tres"}},
        {"name": "echo", "arguments": {"text": "ñ"}},
    ]
    fake_openai.script(Reply(["Voy."], tool_calls=calls, argument_pieces=5))
    out = drain(backend(fake_openai, QWEN).stream_chat(HELLO, tools=[ECHO_SCHEMA], options=opts()))
    assert out.error is None and out.text == "Voy."
    (chunk,) = [c for c in out.chunks if c.tool_calls]
    assert [(c["name"], c["arguments"]) for c in chunk.tool_calls] == [
        (c["name"], c["arguments"]) for c in calls
    ]
    assert all(c["id"].startswith("call_") for c in chunk.tool_calls)
    assert len({c["id"] for c in chunk.tool_calls}) == 2
    assert out.final.stats["done_reason"] == "tool_calls"
    assert fake_openai.last_chat["tools"] == [ECHO_SCHEMA]


def test_arguments_that_are_not_json_stay_raw(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(tool_calls=[{"name": "echo", "arguments": '{"text": "a",'}]))
    out = drain(backend(fake_openai, QWEN).stream_chat(HELLO, tools=[ECHO_SCHEMA], options=opts()))
    assert out.error is None
    assert out.tool_calls[0]["arguments"] == {"__raw__": '{"text": "a",'}


def test_api_key(start_fake_openai: Callable[..., FakeOpenAI], drain) -> None:
    server = start_fake_openai(api_key="sk-right")
    out = drain(backend(server).stream_chat(HELLO, options=opts()))
    assert type(out.error) is BackendError and "THAU_API_KEY" in str(out.error)
    assert "needs an API key" in str(out.error)
    out = drain(backend(server, key="sk-wrong").stream_chat(HELLO, options=opts()))
    assert type(out.error) is BackendError and "THAU_API_KEY" in str(out.error)
    assert "refused the API key" in str(out.error)
    out = drain(backend(server, key="sk-right").stream_chat(HELLO, options=opts()))
    assert out.error is None and out.text == "Hello!"
    assert server.requests_to("/v1/chat/completions")[-1].headers["authorization"] == (
        "Bearer sk-right"
    )


def test_include_usage_is_retried_without(start_fake_openai, drain) -> None:
    server = start_fake_openai(accepts_stream_options=False)
    chat = backend(server)
    out = drain(chat.stream_chat(HELLO, options=opts()))
    assert out.error is None and out.text == "Hello!"
    first, second = server.chat_requests
    assert "stream_options" in first and "stream_options" not in second
    assert "eval_count" not in out.final.stats  # no usage without include_usage
    assert drain(chat.stream_chat(HELLO, options=opts())).error is None
    assert len(server.chat_requests) == 3 and "stream_options" not in server.last_chat


def test_unknown_model(fake_openai: FakeOpenAI, drain) -> None:
    out = drain(backend(fake_openai, "gpt-9").stream_chat(HELLO, options=opts()))
    assert isinstance(out.error, ModelNotFound)
    message = str(out.error)
    assert f"The server at {fake_openai.url} has no model 'gpt-9'" in message
    assert f"See what it serves with `curl {fake_openai.url}/models`, then pass --model." in message


def test_wrong_base_url(fake_openai: FakeOpenAI, drain) -> None:
    out = drain(backend(fake_openai.root).stream_chat(HELLO, options=opts()))
    assert type(out.error) is BackendError and "/v1" in str(out.error)


def test_server_down(dead_url: str, drain) -> None:
    down = backend(dead_url + "/v1")
    assert down.is_available() is False and down.has_model() is False
    out = drain(down.stream_chat(HELLO, options=opts()))
    assert isinstance(out.error, BackendUnavailable) and dead_url in str(out.error)


def test_cut_mid_stream(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(["uno ", "dos ", "tres"], cut_after=2))
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert out.text == "uno dos " and isinstance(out.error, StreamInterrupted)


def test_cut_inside_tool_call_arguments(fake_openai: FakeOpenAI, drain) -> None:
    call = {"name": "echo", "arguments": {"text": "never whole"}}
    fake_openai.script(Reply(tool_calls=[call], argument_pieces=3, cut_after=2))
    out = drain(backend(fake_openai, QWEN).stream_chat(HELLO, tools=[ECHO_SCHEMA], options=opts()))
    assert isinstance(out.error, StreamInterrupted) and out.tool_calls == []


def test_stream_without_done_is_interrupted(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(["a", "b"], drop_final=True))
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert out.text == "ab" and isinstance(out.error, StreamInterrupted)


def test_malformed_sse(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(["a", "b"], malformed_after=1))
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert out.text == "a" and isinstance(out.error, StreamInterrupted)
    assert "not JSON" in str(out.error)


def test_error_inside_the_stream(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(["a", "b"], stream_error_after=1, error="CUDA out of memory"))
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert out.text == "a" and isinstance(out.error, StreamInterrupted)
    assert "CUDA out of memory" in str(out.error)


def test_server_error_500(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(status=500, error="engine dead"))
    out = drain(backend(fake_openai).stream_chat(HELLO, options=opts()))
    assert type(out.error) is BackendError
    assert "500" in str(out.error) and "engine dead" in str(out.error)


def test_slow_server_times_out(fake_openai: FakeOpenAI, drain) -> None:
    fake_openai.script(Reply(["late"], delay=2), Reply(["a", "b"], chunk_delay=2))
    started = time.perf_counter()
    out = drain(backend(fake_openai, timeout=0.3).stream_chat(HELLO, options=opts()))
    assert isinstance(out.error, BackendTimeout) and "THAU_TIMEOUT" in str(out.error)
    assert time.perf_counter() - started < 1.5
    out = drain(backend(fake_openai, timeout=0.3).stream_chat(HELLO, options=opts()))
    assert out.text == "a" and isinstance(out.error, BackendTimeout)


def test_probes(start_fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = start_fake_openai(api_key="k")
    assert backend(server, QWEN, key="k").has_model() is True
    assert backend(server, "other", key="k").has_model() is False
    assert backend(server, QWEN).has_model() is False  # 401 without the key
    assert backend(server, QWEN).is_available() is True  # but it answers
    assert backend(server, QWEN).prefers_native_tools() is True
    assert backend(server, "org/thau-135m-lora").prefers_native_tools() is False


# -- openai_messages --------------------------------------------------------------
def test_text_mode_messages_are_plain() -> None:
    messages: list[Message] = [
        {"role": "assistant", "content": "", "tool_calls": [{"name": "echo", "arguments": {}}]},
        {"role": "tool", "content": "{}", "tool_name": "echo"},
    ]
    assert openai_messages(messages, native=False) == [
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "{}"},
    ]


def test_native_messages_match_results_to_calls_by_name() -> None:
    messages: list[Message] = [
        {"role": "user", "content": "two things"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"name": "echo", "arguments": {"text": "a"}, "id": "call_given"},
                {"name": "search", "arguments": {"query": "b"}},
            ],
        },
        {"role": "tool", "content": "S", "tool_name": "search"},
        {"role": "tool", "content": "E", "tool_name": "echo"},
        {"role": "tool", "content": "orphan", "tool_name": "echo"},
    ]
    user, assistant, search, echo, orphan = openai_messages(messages, native=True)
    assert user == {"role": "user", "content": "two things"}
    first, second = assistant["tool_calls"]
    assert first == {
        "id": "call_given",
        "type": "function",
        "function": {"name": "echo", "arguments": json.dumps({"text": "a"})},
    }
    assert second["id"] and second["id"] != "call_given"
    assert json.loads(second["function"]["arguments"]) == {"query": "b"}
    assert search == {"role": "tool", "tool_call_id": second["id"], "content": "S"}
    assert echo == {"role": "tool", "tool_call_id": "call_given", "content": "E"}
    assert orphan == {"role": "user", "content": "orphan"}
    # the same history always gets the same made-up ids
    assert openai_messages(messages, native=True)[1] == assistant


def test_native_messages_drop_calls_that_got_no_result() -> None:
    messages: list[Message] = [
        {"role": "assistant", "content": "hm", "tool_calls": [{"name": "echo", "arguments": {}}]},
        {"role": "user", "content": "never mind"},
    ]
    assert openai_messages(messages, native=True) == [
        {"role": "assistant", "content": "hm"},
        {"role": "user", "content": "never mind"},
    ]


def test_strict_server_accepts_the_native_round_trip(
    start_fake_openai: Callable[..., FakeOpenAI], drain
) -> None:
    server = start_fake_openai(strict_tool_messages=True)
    history: list[Message] = [
        {"role": "user", "content": "echo hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "echo", "arguments": {"text": "hi"}}],
        },
        {"role": "tool", "content": '{"tool":"echo","ok":true}', "tool_name": "echo"},
    ]
    out = drain(backend(server, QWEN).stream_chat(history, options=opts(native_messages=True)))
    assert out.error is None
    sent = server.last_chat["messages"]
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    # the same history in THAU's own shape is refused by a strict server
    out = drain(backend(server, QWEN).stream_chat(history, options=opts()))
    assert type(out.error) is BackendError and "400" in str(out.error)


def test_host_without_scheme_and_a_reply_built_from_the_request(
    fake_openai: FakeOpenAI, drain
) -> None:
    fake_openai.script(lambda request: Reply([f"{len(request.json['messages'])} messages"]))
    host = fake_openai.url.removeprefix("http://")
    out = drain(backend(host).stream_chat(HELLO, options=opts()))
    assert out.error is None and out.text == "2 messages"

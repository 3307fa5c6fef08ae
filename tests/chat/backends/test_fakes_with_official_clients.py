"""The fakes checked with the official ``ollama`` and ``openai`` client libraries.

If a real client reads a fake correctly, the fake speaks the documented protocol, and
the backend tests against it mean something.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import ollama
import openai
import pytest

from tests.servers.base import Reply
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI

HI = [{"role": "user", "content": "hi"}]


# -- ollama ---------------------------------------------------------------------------
def test_ollama_client_lists_and_shows_models(fake_ollama: FakeOllama) -> None:
    client = ollama.Client(host=fake_ollama.url)
    listed = client.list()
    assert [m.model for m in listed.models] == ["thau-135m:latest", "qwen2.5:0.5b"]
    assert listed.models[1].details is not None
    assert listed.models[1].details.family == "qwen2"
    shown = client.show("qwen2.5:0.5b")
    assert shown.capabilities == ["completion", "tools"] and shown.template
    with pytest.raises(ollama.ResponseError) as info:
        client.show("nope")
    assert info.value.status_code == 404 and "not found" in info.value.error
    version = httpx.get(f"{fake_ollama.url}/api/version").json()
    assert version == {"version": fake_ollama.version}


def test_ollama_client_streams_a_chat(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(["Ho", "la"])
    parts = list(ollama.Client(host=fake_ollama.url).chat("thau-135m", messages=HI, stream=True))
    assert [p.message.content for p in parts] == ["Ho", "la", ""]
    assert [p.done for p in parts] == [False, False, True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 2
    (request,) = fake_ollama.requests_to("/api/chat")
    assert request.headers["content-type"] == "application/json"


def test_ollama_client_reads_ndjson_content_type(fake_ollama: FakeOllama) -> None:
    with httpx.stream(
        "POST", f"{fake_ollama.url}/api/chat", json={"model": "thau-135m", "messages": HI}
    ) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        lines = list(response.iter_lines())
    assert len(lines) == 3  # "Hello", "!", and the done line


def test_ollama_client_non_streaming_and_tool_calls(fake_ollama: FakeOllama) -> None:
    call = {"name": "echo", "arguments": {"text": "hi"}}
    fake_ollama.script(Reply(["Voy."], tool_calls=[call]), Reply(tool_calls=[call]))
    client = ollama.Client(host=fake_ollama.url)
    whole = client.chat("qwen2.5:0.5b", messages=HI, stream=False)
    assert whole.done and whole.message.content == "Voy."
    assert whole.message.tool_calls is not None
    assert whole.message.tool_calls[0].function.name == "echo"
    streamed = list(client.chat("qwen2.5:0.5b", messages=HI, stream=True))
    calls = [c for p in streamed for c in p.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("echo", {"text": "hi"})
    ]


def test_ollama_client_sees_the_documented_errors(fake_ollama: FakeOllama) -> None:
    client = ollama.Client(host=fake_ollama.url)
    with pytest.raises(ollama.ResponseError) as info:
        list(client.chat("missing", messages=HI, stream=True))
    assert info.value.status_code == 404
    assert info.value.error == 'model "missing" not found, try pulling it first'
    fake_ollama.script(Reply(["a"], stream_error_after=1, error="boom"))
    with pytest.raises(ollama.ResponseError) as info:
        list(client.chat("thau-135m", messages=HI, stream=True))
    assert info.value.error == "boom"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("thau-135m", messages=HI, tools=[tool])
    assert info.value.status_code == 400 and "does not support tools" in info.value.error


# -- openai ---------------------------------------------------------------------------
def _openai(server: FakeOpenAI, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=5)


def test_openai_client_lists_models_and_streams(fake_openai: FakeOpenAI) -> None:
    client = _openai(fake_openai)
    assert [m.id for m in client.models.list()] == ["thau-135m", "qwen2.5-0.5b-instruct"]
    fake_openai.script(["Ho", "la"])
    chunks = list(
        client.chat.completions.create(
            model="thau-135m",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hola"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2


def test_openai_client_assembles_tool_calls(fake_openai: FakeOpenAI) -> None:
    call = {"name": "echo", "arguments": {"text": "hola mundo"}}
    fake_openai.script(Reply(tool_calls=[call], argument_pieces=4), Reply(tool_calls=[call]))
    client = _openai(fake_openai)
    stream = client.chat.completions.create(
        model="qwen2.5-0.5b-instruct",
        messages=HI,  # type: ignore[arg-type]
        stream=True,
    )
    arguments, names, ids = "", [], []
    for chunk in stream:
        for fragment in chunk.choices[0].delta.tool_calls or []:
            assert fragment.index == 0
            if fragment.id:
                ids.append(fragment.id)
            if fragment.function and fragment.function.name:
                names.append(fragment.function.name)
            if fragment.function and fragment.function.arguments:
                arguments += fragment.function.arguments
    assert names == ["echo"] and len(ids) == 1 and arguments == '{"text": "hola mundo"}'
    whole = client.chat.completions.create(
        model="qwen2.5-0.5b-instruct",
        messages=HI,  # type: ignore[arg-type]
    )
    assert whole.choices[0].finish_reason == "tool_calls"
    tool_calls = whole.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.name == "echo"  # type: ignore[union-attr]


def test_openai_client_sees_the_documented_errors(
    start_fake_openai: Callable[..., FakeOpenAI],
) -> None:
    server = start_fake_openai(api_key="sk-ok")
    with pytest.raises(openai.AuthenticationError) as auth:
        _openai(server, "sk-bad").models.list()
    assert auth.value.code == "invalid_api_key"
    client = _openai(server, "sk-ok")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    server.script(Reply(["a"], stream_error_after=1, error="engine died"))
    with pytest.raises(openai.APIError, match="engine died"):
        list(
            client.chat.completions.create(
                model="thau-135m",
                messages=HI,  # type: ignore[arg-type]
                stream=True,
            )
        )


def test_a_bug_inside_a_fake_is_recorded_and_answered_500(fake_ollama: FakeOllama) -> None:
    def broken(request: object) -> Reply:
        raise ZeroDivisionError("scripted bug")

    fake_ollama.script(broken)
    body = {"model": "thau-135m", "messages": HI}
    response = httpx.post(f"{fake_ollama.url}/api/chat", json=body)
    assert response.status_code == 500 and "scripted bug" in response.text
    assert [type(e) for e in fake_ollama.errors] == [ZeroDivisionError]
    fake_ollama.errors.clear()  # the fixture asserts the list is empty at teardown

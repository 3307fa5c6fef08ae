"""thau-chat as a user runs it (a subprocess) against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers.base import Reply
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI


def thau(
    tmp_path: Path, *args: str, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return subprocess.run(
        [sys.executable, "-m", "thau.chat", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def test_oneshot_over_ollama_with_a_tool_call(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(
        ['Calculo. <TOOL:code_execution>{"code": "print(6*7)"}', "</TOOL>"],
        ["El resultado es ", "42."],
    )
    args = ["--backend", "ollama", "--host", fake_ollama.url, "--message", "¿6*7?"]
    result = thau(tmp_path, *args, "--json", "--yes")
    assert result.returncode == 0, result.stderr.decode()
    doc = json.loads(result.stdout)
    assert doc["backend"] == "ollama" and doc["model"] == "thau-135m"
    assert doc["adapter"] is None
    (call,) = doc["tool_calls"]
    assert call["name"] == "code_execution" and call["ok"] is True
    assert call["result"]["stdout"].strip() == "42"
    assert doc["answer"] == "El resultado es 42."
    first, second = fake_ollama.chat_requests
    assert first["model"] == "thau-135m" and first["stream"] is True
    assert first["messages"][0]["role"] == "system"
    assert "temperature" in first["options"]
    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"])["ok"] is True


def test_model_not_found_says_what_to_do(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    args = ["--backend", "ollama", "--host", fake_ollama.url, "--model", "missing"]
    result = thau(tmp_path, *args, "--message", "hola")
    assert result.returncode == 1
    err = result.stderr.decode().strip().splitlines()[-1]
    assert err.startswith("thau-chat: error:") and "ollama pull missing" in err


def test_backend_down_is_one_line_nonzero(tmp_path: Path, dead_url: str) -> None:
    result = thau(tmp_path, "--backend", "ollama", "--host", dead_url, "--message", "hola")
    assert result.returncode == 1
    err = result.stderr.decode().strip().splitlines()[-1]
    assert dead_url in err and "ollama serve" in err


def test_stream_cut_mid_tool_call(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(['Voy. <TOOL:web_search>{"query": "cl', 'ima"'], cut_after=1))
    args = ["--backend", "ollama", "--host", fake_ollama.url, "--message", "x", "--json"]
    result = thau(tmp_path, *args)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["tool_calls"] == []  # a cut call never runs
    assert doc["messages"][-1]["content"].endswith("[interrupted]")
    saved = json.loads(Path(doc["conversation"]).read_text())
    assert saved["messages"] == doc["messages"]


def test_auto_uses_ollama_when_it_has_the_model(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(["hola desde ollama"])
    result = thau(tmp_path, "--host", fake_ollama.url, "--message", "hola")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "hola desde ollama"
    assert f"Using Ollama at {fake_ollama.url}" in result.stderr.decode()


def test_auto_falls_back_to_embedded(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.remove_model("thau-135m:latest")
    args = ["--host", fake_ollama.url, "--message", "Hi", "--temperature", "0"]
    result = thau(tmp_path, *args, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    note = result.stderr.decode()
    assert "has no model 'thau-135m'" in note and "using embedded llama.cpp" in note
    assert result.stdout.decode().strip()
    assert fake_ollama.chat_requests == []


def test_openai_backend_native_tools(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        Reply(tool_calls=[{"name": "code_execution", "arguments": {"code": "print(2**10)"}}]),
        Reply(["2**10 = 1024"]),
    )
    args = ["--backend", "openai", "--host", fake_openai.url, "--model", "qwen2.5-0.5b-instruct"]
    result = thau(tmp_path, *args, "--message", "calcula 2**10", "--json", "--yes")
    doc = json.loads(result.stdout)
    first = fake_openai.chat_requests[0]
    assert {t["function"]["name"] for t in first["tools"]} >= {"code_execution", "web_search"}
    (call,) = doc["tool_calls"]
    assert call["name"] == "code_execution" and call["result"]["stdout"] == "1024\n"
    assert doc["answer"] == "2**10 = 1024"
    tool_msg = fake_openai.chat_requests[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"]


def test_non_utf8_stdin(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(["ok"])
    args = ["--backend", "ollama", "--host", fake_ollama.url, "--message", "-"]
    result = thau(tmp_path, *args, stdin=b"caf\xe9\n")
    assert result.returncode == 0
    assert "not valid UTF-8" in result.stderr.decode()
    assert fake_ollama.chat_requests[0]["messages"][-1]["content"] == "caf\ufffd\n"

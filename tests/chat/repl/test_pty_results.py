"""Tool results drawn for people, in the real ``thau-chat`` in a pseudo-terminal: the
built-in tools really run (the sandbox, SearXNG and the vision server over HTTP, both
faked on 127.0.0.1), and no raw JSON shows until ``/last`` or ``/verbose`` asks for it."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.chat.repl.test_pty import Child, plugin_dir, spawn
from tests.servers.base import Exchange, FakeServer, Recorded
from tests.servers.fake_ollama import FakeOllama

__all__ = ["plugin_dir", "spawn"]  # the fixtures of the REPL's pty tests, used here

RESULTS = [
    {
        "title": "ggml-org/llama.cpp: LLM inference in C/C++",
        "url": "https://github.com/ggml-org/llama.cpp",
        "content": "The main goal of llama.cpp is to enable LLM inference with minimal setup "
        "and state-of-the-art performance on a wide range of hardware. " * 3,
    },
    {"title": "llama.cpp docs", "url": "https://llama-cpp.example/docs", "content": "Guides."},
]


class FakeSearxng(FakeServer):
    """SearXNG's ``/search?format=json``."""

    def route(self, request: Recorded, ex: Exchange) -> None:
        if request.path != "/search":
            return self.send_error(ex, 404, "Not Found")
        ex.send_json(200, {"query": request.query.get("q"), "results": RESULTS})


class FakeVision(FakeServer):
    """The vision server's generate-then-fetch exchange, with a real PNG."""

    def __init__(self) -> None:
        super().__init__()
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (220, 40, 40)).save(out, "PNG")
        self.png = out.getvalue()

    def route(self, request: Recorded, ex: Exchange) -> None:
        if request.method == "POST" and request.path == "/vision/generate":
            body = {"success": True, "image_url": "/vision/image/cat-7.png", "seed": 7}
            return ex.send_json(200, body | {"metadata": {"steps": 30}})
        if request.path == "/vision/image/cat-7.png":
            return ex.send_bytes(200, self.png, "image/png")
        self.send_error(ex, 404, "Not Found")


@pytest.fixture
def tool_servers(tmp_path: Path, no_proxy_for_localhost: None) -> Iterator[dict[str, str]]:
    """SearXNG and the vision server, and a config.toml that points the tools at them
    (the chat runs with the fallback sandbox, which warns)."""
    searxng, vision = FakeSearxng().start(), FakeVision().start()
    config = tmp_path / "config" / "thau"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        f'sandbox = "fallback"\nsearch_backend = "searxng"\nsearxng_url = "{searxng.url}"\n'
        f'search_cache_ttl = 0\nvision_url = "{vision.url}"\n',
        "utf-8",
    )
    yield {"searxng": searxng.url, "vision": vision.url}
    for server in (searxng, vision):
        server.stop()
        assert server.errors == []


def call(name: str, **arguments: object) -> list[str]:
    return [f"<TOOL:{name}>{json.dumps(arguments)}</TOOL>"]


def test_built_in_results_are_readable_and_last_shows_the_json(
    spawn: Callable[..., Child], fake_ollama: FakeOllama, tool_servers: dict[str, str]
) -> None:
    fake_ollama.script(
        call("code_execution", code="print('hola')\nprint(6 * 7)"),
        ["Imprimió 42."],
        call("code_execution", code="import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)"),
        ["Falló."],
        call("web_search", query="llama.cpp", max_results=2),
        ["Encontré dos."],
        call("generate_image", prompt="a red square", seed=7),
        ["Listo."],
        call("echo", text="hi"),
        ["Eco."],
    )
    chat = spawn(fake_ollama.url, "--yes")
    chat.say("corre código")
    shown = chat.prompt()
    assert "print('hola')" in shown  # the call: the code itself
    assert "code_execution ok" in shown and "│ hola " in shown and "│ 42 " in shown
    assert "Weaker isolation" in shown
    for raw in ('"stdout"', '"exit_code"', '"stdout_bytes"', '"truncated"', '"code":'):
        assert raw not in shown

    chat.say("y ahora falla")
    shown = chat.prompt()
    assert "code_execution exit 3" in shown and "boom" in shown
    assert "Weaker isolation" not in shown  # once per session
    chat.say("/last")
    shown = chat.prompt()
    assert "code_execution full result" in shown
    assert '"exit_code": 3' in shown and '"stderr": "boom\\n"' in shown

    chat.say("busca llama.cpp")
    shown = chat.prompt()
    assert "query: llama.cpp" in shown
    assert "1. ggml-org/llama.cpp: LLM inference in C/C++" in shown
    assert "https://github.com/ggml-org/llama.cpp" in shown and "2. llama.cpp docs" in shown
    assert "…" in shown  # the long snippet fits on one line
    assert '"snippet"' not in shown and '"results"' not in shown

    chat.say("dibuja")
    shown = chat.prompt()
    image = chat.data / "thau" / "images" / "cat-7.png"
    assert image.is_file()
    assert "▀" in shown  # the preview
    flat = shown.replace("\n", "").replace("│", "").replace(" ", "")
    assert f"file{image}" in flat and f"url{tool_servers['vision']}/vision/image/cat-7.png" in flat
    assert '"image_url"' not in shown

    chat.say("/verbose")
    chat.prompt()
    chat.say("eco")
    shown = chat.prompt()
    assert "echo: hi" in shown and '"echo": "hi"' in shown  # the readable view and the JSON
    assert chat.finish() == 0
    tool_messages = [m for m in chat.conversations()[-1]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_messages[0]["content"])["result"]["stdout"] == "hola\n42\n"

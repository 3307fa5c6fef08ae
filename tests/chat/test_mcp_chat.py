"""MCP tools in the chat: the agent loop (text and native), --run-tool, one-shot, /mcp."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat.repl.helpers import run_chat
from tests.scripted import ScriptedBackend
from tests.tools.mcp_support import fixture_entry, write_config
from thau.chat import cli, session
from thau.chat.agent import Approval, ToolFinished
from thau.chat.backends import Selection
from thau.chat.backends.base import Chunk
from thau.chat.config import load_settings
from thau.tools import mcp_client
from thau.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(120)
EXIT = "\x04"


@pytest.fixture(autouse=True)
def stop_servers() -> Iterator[None]:
    yield
    mcp_client.close_all()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "mcp.json", {"fixture": fixture_entry()})


def run(backend: ScriptedBackend, config: Path, **overrides: Any) -> tuple[Any, list[Any]]:
    settings = load_settings(mcp_config=[str(config)], **overrides)
    built = session.build_session(
        settings,
        selection=Selection(backend, "scripted"),
        registry=ToolRegistry(),
        approver=lambda call, tool: Approval(False, "the person said no"),
    )
    conversation: list[Any] = []
    events = list(built.agent.run_turn(conversation, "how much is 2 + 3?"))
    return conversation, events


def test_text_mode_lists_mcp_tools_in_the_full_prompt_and_runs_them(config: Path) -> None:
    backend = ScriptedBackend(
        [['<TOOL:fixture__add>{"a": 2, "b": 3}</TOOL>'], ["2 + 3 = 5."]], model="base-model"
    )
    conversation, events = run(backend, config, yes=True, tool_mode="text")
    system = backend.requests[0]["messages"][0]["content"]
    assert "- fixture__add: Add two integers." in system
    assert '"required":["a","b"]' in system
    [finished] = [e for e in events if isinstance(e, ToolFinished)]
    assert finished.outcome.ok and finished.outcome.result == {"result": 5}
    tool_message = json.loads(conversation[2]["content"])
    assert tool_message == {"tool": "fixture__add", "ok": True, "result": {"result": 5}}
    assert conversation[-1]["content"] == "2 + 3 = 5."


def test_native_mode_sends_the_servers_schema_and_takes_native_calls(config: Path) -> None:
    call = {"name": "fixture__greet", "arguments": {"name": "Ana"}}
    backend = ScriptedBackend([[Chunk(tool_calls=[call])], ["Done."]], model="qwen2.5")
    conversation, _ = run(backend, config, yes=True, tool_mode="native")
    [greet] = [
        t["function"] for t in backend.requests[0]["tools"] if t["function"]["name"] == call["name"]
    ]
    assert greet["description"] == "Greet someone by name."
    assert greet["parameters"]["properties"]["shout"]["type"] == "boolean"
    assert json.loads(conversation[2]["content"])["result"] == {"result": "hello Ana"}


def test_mcp_tools_ask_for_approval_by_default(config: Path) -> None:
    backend = ScriptedBackend([['<TOOL:fixture__add>{"a": 1, "b": 1}</TOOL>'], ["ok"]])
    _, events = run(backend, config, tool_mode="text")
    [finished] = [e for e in events if isinstance(e, ToolFinished)]
    assert finished.outcome.error == "not approved: the person said no"


def test_a_server_error_is_an_error_result_and_the_turn_goes_on(config: Path) -> None:
    backend = ScriptedBackend(
        [['<TOOL:fixture__fail>{"reason": "quota"}</TOOL>'], ["The tool failed."]]
    )
    conversation, _ = run(backend, config, yes=True, tool_mode="text")
    result = json.loads(conversation[2]["content"])
    assert not result["ok"] and "failed on purpose: quota" in result["error"]
    assert conversation[-1]["content"] == "The tool failed."


def test_run_tool_json_has_ok_and_result(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--mcp-config", str(config), "--run-tool", "fixture__add", "--json"]
    assert cli.main([*args, "--args", '{"a": 20, "b": 22}', "--yes"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["result"] == {"result": 42}
    assert cli.main([*args, "--args", '{"a": 1, "b": 2}']) == 1  # no --yes, no terminal
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and "needs approval" in doc["error"]
    assert cli.main([*args, "--args", '{"a": "x"}', "--yes"]) == 2
    assert "'b' is a required property" in capsys.readouterr().err


def test_a_bad_mcp_config_is_a_clear_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {"x": {"command": "a", "url": "http://h/mcp"}}}')
    assert cli.main(["--mcp-config", str(bad), "--run-tool", "x__y"]) == 1
    assert 'give either "command"' in capsys.readouterr().err


def test_the_repl_calls_mcp_tools_and_shows_servers_with_slash_mcp(config: Path) -> None:
    chat = run_chat(
        "suma 2 y 3\r/mcp\r" + EXIT,
        [['<TOOL:fixture__add>{"a": 2, "b": 3}</TOOL>'], ["Son 5."]],
        mcp_config=[str(config)],
        yes=True,
    )
    assert chat.rc == 0
    assert "Son 5." in chat.screen
    panel = chat.screen[chat.screen.index("Son 5.") :]
    assert "fixture" in panel and "ready" in panel
    assert "fixture__add" in panel and "asks for approval" in panel
    assert "fixture_server.py" in panel  # how it runs


def test_slash_mcp_without_servers_says_how_to_add_them() -> None:
    chat = run_chat("/mcp\r" + EXIT)
    assert "No MCP servers" in chat.screen and "--mcp-config" in chat.screen

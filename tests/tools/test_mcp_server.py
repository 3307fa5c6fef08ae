"""``thau-mcp`` driven by the MCP SDK's own client, over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import INVALID_PARAMS

from tests.tools.mcp_support import free_port, serving
from thau.tools import mcp_server
from thau.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(120)

SCRIPT = Path(sys.executable).with_name("thau-mcp")


def command() -> list[str]:
    """The installed ``thau-mcp`` (``python -m`` where the script is not installed)."""
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "thau.tools.mcp_server"]


def isolated_env(tmp: Path) -> dict[str, str]:
    return {
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "THAU_SANDBOX_TIMEOUT": "20",
    }


def over_stdio(tmp: Path, body: Callable[[Client], Awaitable[Any]]) -> Any:
    first, *rest = command()
    params = StdioServerParameters(command=first, args=rest, env=isolated_env(tmp))

    async def main() -> Any:
        async with Client(params) as client:
            return await body(client)

    return anyio.run(main)


def test_lists_the_registry_with_its_schemas(tmp_path: Path) -> None:
    async def body(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in over_stdio(tmp_path, body)}
    registry = ToolRegistry.from_entry_points()
    assert set(registry.names()) <= set(tools)
    for name in ("code_execution", "web_search", "generate_image"):
        assert tools[name].input_schema == registry.get(name).parameters()
        assert tools[name].description == registry.get(name).description


def test_code_execution_runs_sandboxed_and_bad_calls_are_mcp_errors(tmp_path: Path) -> None:
    escape = "import socket\nsocket.create_connection(('127.0.0.1', 9))"

    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["ok"] = await client.call_tool("code_execution", {"code": "print(6 * 7)"})
        out["net"] = await client.call_tool("code_execution", {"code": escape})
        for key, name, arguments in [
            ("empty", "code_execution", {"code": ""}),
            ("typo", "code_execution", {"cod": "print(1)"}),
            ("unknown", "no_such_tool", {}),
        ]:
            try:
                await client.call_tool(name, arguments)
            except MCPError as exc:
                out[key] = exc
        out["after"] = await client.call_tool("code_execution", {"code": "print('still here')"})
        return out

    out = over_stdio(tmp_path, body)
    ran = out["ok"]
    assert not ran.is_error
    assert ran.structured_content["stdout"] == "42\n"
    assert ran.structured_content["sandbox"] in ("bwrap", "fallback")
    assert json.loads(ran.content[0].text)["exit_code"] == 0
    blocked = out["net"].structured_content
    assert blocked["exit_code"] != 0 and blocked["stdout"] == ""
    for key, message in [
        ("empty", "code: String should have at least 1 character"),
        ("typo", "code: Field required"),
        ("unknown", "unknown tool 'no_such_tool'"),
    ]:
        assert isinstance(out[key], MCPError), key
        assert out[key].code == INVALID_PARAMS and message in out[key].message
    assert out["after"].structured_content["stdout"] == "still here\n"


def test_http_needs_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **isolated_env(tmp_path), "THAU_MCP_TOKEN": "s3cret"}
    url = f"http://127.0.0.1:{port}/mcp"
    with serving([*command(), "--http", f"127.0.0.1:{port}"], port, env=env):
        refused = httpx.post(url, json={}, timeout=10)
        assert refused.status_code == 401
        wrong = httpx.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401

        async def main() -> Any:
            headers = {"Authorization": "Bearer s3cret"}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                listed = await client.list_tools()
                called = await client.call_tool("code_execution", {"code": "print(1 + 1)"})
                return listed, called

        listed, called = anyio.run(main)
    assert "code_execution" in {t.name for t in listed.tools}
    assert called.structured_content["stdout"] == "2\n"


def test_http_refuses_a_public_address_without_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert mcp_server.main(["--http", "0.0.0.0:8765"]) == 2
    assert "needs a bearer token: set THAU_MCP_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("[::1]:9001", ("::1", 9001)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert mcp_server.parse_address(text) == address


@pytest.mark.parametrize("text", ["", "host:", "host:http", "1:70000"])
def test_bad_addresses_are_clear_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mcp_server.main(["--http", text]) == 2
    assert "--http wants [HOST:]PORT" in capsys.readouterr().err


def test_loopback_detection() -> None:
    assert all(mcp_server.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(mcp_server.is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.org"))

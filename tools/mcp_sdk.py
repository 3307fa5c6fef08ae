"""The one module that imports the ``mcp`` SDK.

THAU uses the SDK's 2.x line (``mcp>=2.3,<3``): its ``Client`` negotiates both the
2026 protocol and the older initialize handshake, and its stdio transport stops a
server's whole process tree. Everything else in THAU speaks MCP through the plain
types and functions below, so moving to another SDK line is a change in this file only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from thau import __version__
from thau.tools.mcp_models import (
    CallTimedOut,
    ConnectionLost,
    McpFailure,
    RemoteError,
    RemoteResult,
    RemoteTool,
)

MAX_LIST_PAGES = 50
"""``tools/list`` pages read at most: a server that never stops paginating cannot hang us."""


# -- the client side -------------------------------------------------------------------
class Connection:
    """A started session with one server."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list_tools(self) -> list[RemoteTool]:
        tools: list[RemoteTool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            with _translated():
                page = await self._client.list_tools(cursor=cursor)
            tools += [
                RemoteTool(t.name, t.description or t.title or "", dict(t.input_schema))
                for t in page.tools
            ]
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> RemoteResult:
        with _translated():
            result = await self._client.call_tool(name, arguments, read_timeout_seconds=timeout)
        return RemoteResult(
            [_block(b) for b in result.content], result.structured_content, result.is_error
        )


@asynccontextmanager
async def connect_stdio(
    command: str,
    args: list[str],
    env: Mapping[str, str],
    cwd: str | None,
    errlog: TextIO,
) -> AsyncIterator[Connection]:
    """Start ``command`` and talk MCP over its stdin/stdout; its stderr goes to ``errlog``.

    Leaving the context closes its stdin, then stops its process tree (bounded waits).
    """
    params = StdioServerParameters(command=command, args=args, env=dict(env), cwd=cwd)
    async with _client(stdio_client(params, errlog=errlog)) as connection:
        yield connection


@asynccontextmanager
async def connect_http(url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
    """Talk MCP to a streamable HTTP endpoint, sending ``headers`` with every request."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=dict(headers), timeout=httpx2.Timeout(30.0, read=300.0))
        )
        connection = await stack.enter_async_context(
            _client(streamable_http_client(url, http_client=http))
        )
        yield connection


@asynccontextmanager
async def _client(transport: Any) -> AsyncIterator[Connection]:
    client = Client(
        transport,
        client_info=types.Implementation(name="thau", version=__version__),
        cache=None,  # THAU keeps its own tool-list cache
    )
    with _translated():
        async with client:
            yield Connection(client)


@contextmanager
def _translated() -> Iterator[None]:
    """Turn the SDK's exceptions into :class:`McpFailure` subclasses."""
    try:
        yield
    except McpFailure:
        raise
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, MCPError):
            if leaf.code == types.CONNECTION_CLOSED:
                raise ConnectionLost(leaf.message) from None
            if leaf.code == types.REQUEST_TIMEOUT:
                raise CallTimedOut(leaf.message) from None
            raise RemoteError(leaf.code, leaf.message) from None
        if isinstance(leaf, anyio.ClosedResourceError | anyio.BrokenResourceError | EOFError):
            raise ConnectionLost("connection closed") from None
        if isinstance(leaf, ValidationError):
            raise RemoteError(0, f"the server's answer is not valid MCP: {leaf}") from None
        if isinstance(leaf, httpx2.HTTPError):
            raise ConnectionLost(f"{type(leaf).__name__}: {leaf}") from None
        if leaf is not exc:
            raise leaf from None
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _block(block: Any) -> dict[str, Any]:
    kind = getattr(block, "type", "unknown")
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind in ("image", "audio"):
        return {"type": kind, "data": block.data, "mime_type": block.mime_type}
    if kind == "resource":
        res = block.resource
        out = {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type}
        if hasattr(res, "text"):
            out["text"] = res.text
        else:
            out["blob"] = res.blob
        return out
    if kind == "resource_link":
        return {"type": "resource_link", "uri": str(block.uri), "name": block.name}
    return {"type": str(kind)}


# -- the server side -------------------------------------------------------------------
@dataclass(frozen=True)
class ServedTool:
    """A tool THAU offers to MCP hosts."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ServedResult:
    """What one call answers: text, optional structured content, optional images."""

    text: str
    structured: dict[str, Any] | None = None
    images: list[tuple[str, str]] = field(default_factory=list)
    """``(base64 data, mime type)`` pairs."""
    is_error: bool = False


class InvalidCall(Exception):
    """The call names no tool or its arguments do not validate: a JSON-RPC error."""


CallHandler = Callable[[str, dict[str, Any]], Awaitable[ServedResult]]


def build_server(name: str, tools: list[ServedTool], call: CallHandler) -> Server[Any]:
    """A low-level MCP server offering ``tools``; ``call`` runs them.

    ``call`` raising :class:`InvalidCall` answers an ``invalid params`` error.
    """
    listed = [
        types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
        for t in tools
    ]

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            served = await call(params.name, dict(params.arguments or {}))
        except InvalidCall as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        content: list[Any] = [types.TextContent(type="text", text=served.text)]
        content += [
            types.ImageContent(type="image", data=data, mime_type=mime)
            for data, mime in served.images
        ]
        return types.CallToolResult(
            content=content, structured_content=served.structured, is_error=served.is_error
        )

    return Server(
        name,
        version=__version__,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


async def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` on this process's stdin/stdout until stdin closes.

    While it serves, file descriptor 1 points at stderr, so stray prints (a plugin's,
    a child process's) cannot corrupt the protocol stream.
    """
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def http_app(server: Server[Any], *, host: str) -> Any:
    """The ASGI app serving ``server`` over streamable HTTP at ``/mcp``.

    On a loopback ``host`` the SDK also refuses requests whose ``Host`` or ``Origin``
    header is not local (DNS rebinding).
    """
    return server.streamable_http_app(streamable_http_path="/mcp", host=host)

"""The plain data THAU keeps of MCP (tool listings, call results, failures).

Nothing here imports the SDK, so the chat can register cached MCP tools without
paying for ``import mcp``; :mod:`thau.tools.mcp_sdk` converts the SDK's types to these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RemoteTool:
    """A tool as a server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class RemoteResult:
    """A ``tools/call`` answer: content blocks as plain dicts (``type`` plus ``text``,
    ``data``/``mime_type``, ``uri``, ...), the structured content and the error flag."""

    blocks: list[dict[str, Any]]
    structured: Any = None
    is_error: bool = False


class McpFailure(Exception):
    """Talking to an MCP server failed."""


class ConnectionLost(McpFailure):
    """The server went away (it exited or closed the connection)."""


class CallTimedOut(McpFailure):
    """The server did not answer in time."""


class RemoteError(McpFailure):
    """The server answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

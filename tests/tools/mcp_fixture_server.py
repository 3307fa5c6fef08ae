"""A real MCP server for the tests, written with the SDK: ``python mcp_fixture_server.py``
serves stdio, ``--http PORT`` streamable HTTP on 127.0.0.1 (with ``--header NAME=VALUE``
every request must carry that header).

Tools: ``add`` and ``greet`` (arguments), ``fail`` (an error result), ``slow`` (sleeps),
``crash`` (the process exits), ``picture`` (text and a PNG), ``env`` (an environment
variable) and ``Odd Name!`` (a name THAU must rewrite).
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
import sys
import time
import zlib
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent

server = MCPServer("fixture")


def tiny_png() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def greet(name: str, shout: bool = False) -> str:
    """Greet someone by name."""
    text = f"hello {name}"
    return text.upper() if shout else text


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason given."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@server.tool()
def crash() -> str:
    """Exit the server process at once."""
    print("fixture: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool(structured_output=False)
def picture() -> list[Any]:
    """Return a caption and a small PNG."""
    data = base64.b64encode(tiny_png()).decode()
    return [
        TextContent(type="text", text="a red square"),
        ImageContent(type="image", data=data, mime_type="image/png"),
    ]


@server.tool()
def env(name: str) -> str:
    """The value of an environment variable of the server process."""
    return os.environ.get(name, "<unset>")


@server.tool(name="Odd Name!")
def odd() -> str:
    """A tool whose name is not a THAU tool name."""
    return "odd"


class RequireHeader:
    """ASGI middleware: refuse HTTP requests without the header."""

    def __init__(self, app: Any, name: str, value: str) -> None:
        self.app, self.name, self.value = app, name.lower().encode(), value.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(self.name) != self.value:
            await send({"type": "http.response.start", "status": 403, "headers": []})
            await send({"type": "http.response.body", "body": b"missing header"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    parser.add_argument("--header")
    args = parser.parse_args()
    if args.http is None:
        server.run()
        return
    import uvicorn

    app: Any = server.streamable_http_app(host="127.0.0.1")
    if args.header:
        name, _, value = args.header.partition("=")
        app = RequireHeader(app, name, value)
    uvicorn.run(app, host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()

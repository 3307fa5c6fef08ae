"""``thau-mcp``: THAU's tools served to MCP hosts (stdio, or streamable HTTP).

It serves the registry the chat uses (the built-in tools and every ``thau.tools``
plugin) with their JSON schemas. The host decides whether a call may run: a call that
reaches ``thau-mcp`` runs at once, as with ``thau-chat --yes``; code still runs in
THAU's sandbox. Over HTTP it binds 127.0.0.1 unless told otherwise, and with
``THAU_MCP_TOKEN`` set every request must carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

from thau import __version__
from thau.http_security import bearer_ok, is_loopback

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""Images bigger than this are sent as their path only."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thau-mcp",
        description="Serve THAU's tools (built-ins and plugins) to MCP hosts.",
        epilog="The MCP host asks the person before each call; thau-mcp runs what it is "
        "sent. THAU_MCP_TOKEN (or mcp_token in config.toml) requires a bearer token over HTTP.",
    )
    p.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp (HOST defaults to 127.0.0.1) "
        "instead of stdio",
    )
    p.add_argument("--version", action="version", version=f"thau-mcp {__version__}")
    return p


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; ``ValueError`` with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http wants [HOST:]PORT with a port from 1 to 65535, not {text!r}")
    return host, int(port)


class ToolService:
    """Runs registry tools for MCP calls, one at a time, approved by the host."""

    def __init__(self, registry: Any, context: Any) -> None:
        self.registry = registry
        self.context = context
        self._lock = threading.Lock()

    def served_tools(self) -> list[Any]:
        from thau.tools.mcp_sdk import ServedTool

        return [ServedTool(t.name, t.description, t.parameters()) for t in self.registry]

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        import anyio

        from thau.errors import ToolError
        from thau.tools.mcp_sdk import InvalidCall

        try:
            tool, args = self.registry.validate(name, arguments)
        except ToolError as exc:
            raise InvalidCall(str(exc)) from None
        return await anyio.to_thread.run_sync(self._run, tool, args)

    def _run(self, tool: Any, args: Any) -> Any:
        from thau.tools.mcp_sdk import ServedResult

        with self._lock:
            outcome = self.registry.execute(tool, args, self.context)
        if not outcome.ok:
            return ServedResult(text=outcome.error or "failed", is_error=True)
        result = outcome.result
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        structured = result if isinstance(result, dict) else None
        return ServedResult(text=text, structured=structured, images=_images(result))


def _images(result: Any) -> list[tuple[str, str]]:
    """A result's ``path`` as image content, when it is a small image file."""
    if not isinstance(result, dict) or not isinstance(result.get("path"), str):
        return []
    path = Path(result["path"])
    mime = IMAGE_TYPES.get(path.suffix.lower())
    try:
        if mime is None or not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
            return []
        return [(base64.b64encode(path.read_bytes()).decode("ascii"), mime)]
    except OSError:
        return []


class BearerToken:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not bearer_ok(given.decode("latin-1"), self.token):
                body = b'{"error": "missing or wrong bearer token (THAU_MCP_TOKEN)"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _service() -> ToolService:
    from thau import paths
    from thau.settings import tool_environment
    from thau.tools.registry import ToolContext, ToolRegistry

    registry = ToolRegistry.from_entry_points()
    for problem in registry.load_errors:
        print(f"thau-mcp: warning: {problem}", file=sys.stderr)
    env = tool_environment()
    context = ToolContext(
        data_dir=paths.data_dir(),
        vision_url=env.get("THAU_VISION_URL", "http://localhost:8000"),
        approved=True,  # the host asked the person
    )
    return ToolService(registry, context)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from thau.errors import ThauError

    try:
        address = parse_address(args.http) if args.http is not None else None
        service = _service()
    except (ValueError, ThauError) as exc:
        print(f"thau-mcp: error: {exc}", file=sys.stderr)
        return 2
    from thau.tools import mcp_sdk

    server = mcp_sdk.build_server("thau", service.served_tools(), service.call)
    if address is None:
        import anyio

        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(mcp_sdk.serve_stdio, server)
        return 0
    return _serve_http(server, *address)


def _serve_http(server: Any, host: str, port: int) -> int:
    import uvicorn

    from thau.settings import tool_environment
    from thau.tools import mcp_sdk

    token = tool_environment().get("THAU_MCP_TOKEN", "").strip()
    if not token and not is_loopback(host):
        print(
            f"thau-mcp: error: serving tools that run code on {host} (not a loopback address) "
            "needs a bearer token: set THAU_MCP_TOKEN",
            file=sys.stderr,
        )
        return 2
    app = mcp_sdk.http_app(server, host=host)
    if token:
        app = BearerToken(app, token)
    shown = f"[{host}]" if ":" in host else host
    auth = "bearer token required" if token else "no token"
    print(f"thau-mcp: serving at http://{shown}:{port}/mcp ({auth})", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except (OSError, SystemExit) as exc:
        print(f"thau-mcp: error: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

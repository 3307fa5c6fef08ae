"""Helpers of the MCP tests: the fixture server as a config entry, over stdio or HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).with_name("mcp_fixture_server.py")


def fixture_entry(**extra: Any) -> dict[str, Any]:
    """An ``mcpServers`` entry that starts the fixture server over stdio."""
    return {"command": sys.executable, "args": [str(FIXTURE)], **extra}


def write_config(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), "utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def serving(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a server on ``port``) until the block ends."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def http_fixture(header: str | None = None) -> Iterator[str]:
    """The fixture server over streamable HTTP on 127.0.0.1; yields its URL."""
    port = free_port()
    command = [sys.executable, str(FIXTURE), "--http", str(port)]
    if header:
        command += ["--header", header]
    with serving(command, port):
        yield f"http://127.0.0.1:{port}/mcp"

"""A scriptable HTTP/1.1 server in a thread, with faults, for backend tests.

Subclasses (``FakeOllama``, ``FakeOpenAI``) route requests and format replies; this
module owns the sockets, chunked streaming, recording and the faults of a ``Reply``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    """What the fake answers to one chat request, faults included."""

    text: list[str] = field(default_factory=list)
    """Text pieces, one per streamed chunk."""
    tool_calls: list[dict[str, Any]] | None = None
    """``[{"name", "arguments"}]``; string arguments are sent verbatim (OpenAI)."""
    done_reason: str | None = None
    """Default: ``stop`` (Ollama), ``stop`` or ``tool_calls`` (OpenAI)."""
    delay: float = 0.0
    """Seconds to wait before the first byte (status line)."""
    chunk_delay: float = 0.0
    """Seconds to wait between chunks."""
    cut_after: int | None = None
    """Shut the socket down after this many chunks, mid-stream."""
    malformed_after: int | None = None
    """After this many chunks, send a line that is not valid JSON and end the stream."""
    stream_error_after: int | None = None
    """After this many chunks, send an in-stream error object and end the stream."""
    drop_final: bool = False
    """Leave out the final ``done`` line (Ollama) or finish/usage/``[DONE]`` (OpenAI)."""
    status: int = 200
    error: str | None = None
    """With a status >= 400 (or alone: 500), the error message; else the in-stream one."""
    argument_pieces: int = 3
    """OpenAI: how many fragments each tool call's arguments are streamed in."""
    calls_as_text: str | None = None
    """Ollama: the model wrote ``tool_calls`` in a format the server's parser did not
    take for a call (``hermes``, ``json`` or ``fenced``): they stay in ``content`` as
    that text and no ``tool_calls`` are sent, as the real server does."""

    def http_error(self) -> tuple[int, str] | None:
        """``(status, message)`` when this reply is an HTTP error."""
        if self.status >= 400:
            return self.status, self.error or "internal server error"
        if self.error is not None and self.stream_error_after is None:
            return 500, self.error
        return None


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    raw: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None."""
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return None


ScriptItem = Reply | Callable[[Recorded], Reply] | list[str]
"""A scripted chat reply: a ``Reply``, a function of the request, or text pieces."""

_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Exchange(BaseHTTPRequestHandler):
    """One connection; hands each request to its ``FakeServer``."""

    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing -------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        self.server.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        fake = self.server.fake
        self.headers_sent = False
        url = urlsplit(self.path)
        recorded = Recorded(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            raw=self._read_body(),
        )
        with fake._lock:
            fake.requests.append(recorded)
        try:
            fake._respond(recorded, self)
        except _CLIENT_GONE:
            self.close_connection = True
        except Exception as exc:  # a bug in the fake or in a scripted callable
            fake.errors.append(exc)
            self.close_connection = True
            if not self.headers_sent:
                with contextlib.suppress(OSError):
                    self.send_text(500, f"fake server error: {exc!r}")

    # -- what fakes call ----------------------------------------------------------------
    def _head(self, status: int, content_type: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in extra.items():
            self.send_header(key, value)
        self.headers_sent = True

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self._head(status, content_type, {"Content-Length": str(len(body))})
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, value: Any) -> None:
        self.send_bytes(status, json.dumps(value).encode(), "application/json; charset=utf-8")

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def begin_stream(self, content_type: str, extra: dict[str, str] | None = None) -> None:
        self._head(200, content_type, {"Transfer-Encoding": "chunked", **(extra or {})})
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Shut the socket down: the client sees a broken connection."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer


class FakeServer:
    """Base of the fakes: a ``ThreadingHTTPServer`` on 127.0.0.1 in a thread."""

    chat_path = ""
    """The path whose replies come from ``script`` (``/api/chat``, ...)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self.overrides: dict[str, Reply] = {}
        self.default_reply = Reply(["Hello", "!"])
        self._script: deque[ScriptItem] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------
    def start(self) -> FakeServer:
        server = _Server(("127.0.0.1", 0), Exchange)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakeServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL a client is given (the root; ``/v1`` for OpenAI)."""
        return self.root

    # -- scripting ------------------------------------------------------------------
    def script(self, *items: ScriptItem) -> None:
        """Queue replies for the chat path: ``Reply``, ``Recorded -> Reply`` or pieces."""
        with self._lock:
            self._script.extend(items)

    def next_reply(self, request: Recorded) -> Reply:
        """The override for the chat path, else the next scripted reply, else the default."""
        override = self.overrides.get(request.path)
        if override is not None:
            return override
        with self._lock:
            item = self._script.popleft() if self._script else self.default_reply
        if callable(item):
            item = item(request)
        return item if isinstance(item, Reply) else Reply(list(item))

    def requests_to(self, path: str, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.path == path and method in (None, r.method)]

    @property
    def chat_requests(self) -> list[Any]:
        """JSON bodies of the chat requests, in order."""
        return [r.json for r in self.requests_to(self.chat_path, "POST")]

    @property
    def last_chat(self) -> Any:
        return self.chat_requests[-1]

    # -- answering ------------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep; False when the server is stopping meanwhile."""
        return not (seconds > 0 and self._stopping.wait(seconds))

    def _respond(self, request: Recorded, ex: Exchange) -> None:
        override = self.overrides.get(request.path)
        if override is not None and request.path != self.chat_path:
            if not self.wait(override.delay):
                return ex.cut()
            error = override.http_error()
            if error is not None:
                return self.send_error(ex, *error)
            if override.cut_after is not None:
                return ex.cut()
        self.route(request, ex)

    def route(self, request: Recorded, ex: Exchange) -> None:
        """Answer one request (subclasses)."""
        self.send_error(ex, 404, "404 page not found")

    def send_error(self, ex: Exchange, status: int, message: str) -> None:
        """An HTTP error in the server's own shape (subclasses)."""
        ex.send_text(status, message)

    def stream(
        self,
        ex: Exchange,
        reply: Reply,
        *,
        content_type: str,
        head: Iterable[bytes] = (),
        pieces: list[bytes],
        tail: Iterable[bytes],
        malformed: bytes,
        stream_error: bytes,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Send ``head``, ``pieces`` (the counted chunks) and ``tail``, with the faults."""
        ex.begin_stream(content_type, extra_headers)
        for data in head:
            ex.send_chunk(data)
        for index in range(len(pieces) + 1):
            if reply.cut_after is not None and index == min(reply.cut_after, len(pieces)):
                return ex.cut()
            if reply.malformed_after is not None and index == min(
                reply.malformed_after, len(pieces)
            ):
                ex.send_chunk(malformed)
                return ex.end_stream()
            if reply.stream_error_after is not None and index == min(
                reply.stream_error_after, len(pieces)
            ):
                ex.send_chunk(stream_error)
                return ex.end_stream()
            if index == len(pieces):
                break
            if index and not self.wait(reply.chunk_delay):
                return ex.cut()
            ex.send_chunk(pieces[index])
        if not reply.drop_final:
            for data in tail:
                ex.send_chunk(data)
        ex.end_stream()

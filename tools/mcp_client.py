"""THAU as an MCP client: configured servers' tools join the tool registry.

Lifecycle, chosen so that a session pays only for the servers it uses:

- A server's tool list is cached in ``<data dir>/mcp/tools/`` (keyed by its command or
  URL). With a cached list its tools are registered at once and the server starts
  only when the model first calls one of them.
- Without one (the first session after a server is added or changed), the server is
  started in the background when the session is built; the registry waits for its
  list, bounded by ``startup_timeout``, the first time the tools are needed (the
  first prompt), not before. ``thau-chat --help`` never gets here.
- Every server runs on one background event-loop thread and stops with the session
  (:meth:`McpHub.close`, also run at exit). A server that fails to start, crashes,
  times out or answers an error gives the model an error result; it is started again
  at the next call. Its stderr is kept in ``<data dir>/mcp/logs/<server>.log``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from thau.errors import ToolError
from thau.tools.mcp_config import ServerConfig
from thau.tools.mcp_models import (
    CallTimedOut,
    ConnectionLost,
    McpFailure,
    RemoteError,
    RemoteResult,
    RemoteTool,
)
from thau.tools.mcp_tools import make_tool, registry_name
from thau.tools.registry import Tool, ToolRegistry

if TYPE_CHECKING:
    import anyio

    from thau.tools.mcp_sdk import Connection

Report = Callable[[str], None]
"""Tells the person something (a server failed to start); the chat prints it."""

STOP_TIMEOUT = 10.0
LOG_TAIL_BYTES = 2000


class _Run:
    """One start of a server: its cancel scope, set by the owner task on the loop."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Leave the connection's context, which stops the server (call on the loop)."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class LoopThread:
    """An asyncio event loop on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._running())

    def call_soon(self, callback: Callable[[], Any]) -> None:
        self._running().call_soon_threadsafe(callback)

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mcp", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=STOP_TIMEOUT)
            if not thread.is_alive():
                loop.close()


@dataclass(frozen=True)
class ServerStatus:
    """What ``/mcp`` shows of one server."""

    name: str
    transport: str
    state: str
    detail: str
    tools: list[str]
    approval: str
    log: Path | None


class McpServer:
    """One configured server: started when needed, stopped with the session."""

    def __init__(self, config: ServerConfig, loop: LoopThread, data_dir: Path) -> None:
        self.config = config
        self._loop = loop
        self._log_path = data_dir / "mcp" / "logs" / f"{config.prefix[:-2]}.log"
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._owner: concurrent.futures.Future[Any] | None = None
        self._run: _Run | None = None
        self._starting: concurrent.futures.Future[list[RemoteTool]] | None = None
        self.state = "not started"
        self.detail = ""
        self.tools: list[RemoteTool] | None = None
        self.on_listed: Callable[[McpServer, list[RemoteTool]], None] | None = None

    # starting and stopping ----------------------------------------------------------
    def start_in_background(self) -> concurrent.futures.Future[list[RemoteTool]]:
        """Begin starting (unless running or starting); the future gives the tool list."""
        with self._lock:
            if self._connection is not None and self.tools is not None:
                done: concurrent.futures.Future[list[RemoteTool]] = concurrent.futures.Future()
                done.set_result(self.tools)
                return done
            if self._starting is None or self._starting.done():
                self._starting = concurrent.futures.Future()
                self.state, self.detail = "starting", ""
                self._run = _Run()
                self._owner = self._loop.submit(self._own(self._run, self._starting))
            return self._starting

    def listed_tools(self) -> list[RemoteTool]:
        """Start if needed and wait (``startup_timeout``) for the tool list."""
        starting = self.start_in_background()
        try:
            return starting.result(timeout=self.config.startup_timeout)
        except concurrent.futures.TimeoutError:
            self._fail(f"did not start within {self.config.startup_timeout:g} s")
            self._cancel()
        except Exception as exc:
            self._fail(_start_error(exc))
        raise ToolError(self._problem())

    async def _own(self, run: _Run, ready: concurrent.futures.Future[list[RemoteTool]]) -> None:
        """Hold the connection open until ``run`` is cancelled (the SDK's contexts live
        in this one task, as anyio requires)."""
        import anyio

        log = self._open_log()
        try:
            with anyio.CancelScope() as scope:
                run.scope = scope
                if run.cancelled:
                    scope.cancel()
                async with self._connect(log) as connection:
                    tools = await connection.list_tools()
                    with self._lock:
                        self._connection, self.tools = connection, tools
                        self.state, self.detail = "ready", ""
                    if self.on_listed is not None:
                        self.on_listed(self, tools)
                    if not ready.done():
                        ready.set_result(tools)
                    await anyio.sleep_forever()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                self._fail(f"stopped: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if self._run is run:
                    self._connection = None
            if not ready.done():
                ready.set_exception(ConnectionLost("stopped during start-up"))
            log.close()

    def _connect(self, log: TextIO) -> Any:
        from thau.tools import mcp_sdk  # here, on the loop thread: the SDK loads in the background

        config = self.config
        if config.url is not None:
            return mcp_sdk.connect_http(config.url, config.headers)
        assert config.command is not None
        return mcp_sdk.connect_stdio(config.command, config.args, config.env, config.cwd, log)

    def _open_log(self) -> TextIO:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self._log_path, "w", encoding="utf-8", errors="replace")

    def _cancel(self) -> None:
        """Stop the current run without waiting."""
        run = self._run
        if run is not None:
            self._loop.call_soon(run.cancel)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and wait (bounded) until its process is gone."""
        owner = self._owner
        if owner is None or owner.done():
            return
        self._cancel()
        try:
            owner.result(timeout=timeout)
        except Exception:
            owner.cancel()
        with self._lock:
            if self.state in ("ready", "starting"):
                self.state, self.detail = "stopped", ""

    # calling ------------------------------------------------------------------------
    def call(self, tool: str, arguments: dict[str, Any]) -> RemoteResult:
        """Call ``tool``; every failure is a ``ToolError`` that says what happened."""
        self.listed_tools()
        connection = self._connection
        if connection is None:
            raise ToolError(self._problem("stopped before the call"))
        timeout = self.config.timeout
        future = self._loop.submit(connection.call_tool(tool, arguments, timeout))
        try:
            return future.result(timeout=timeout + 5)
        except (concurrent.futures.TimeoutError, CallTimedOut):
            future.cancel()
            raise ToolError(
                f"MCP server {self.config.name!r} did not answer {tool} within {timeout:g} s "
                "(its per-call timeout)"
            ) from None
        except ConnectionLost as exc:
            with self._lock:
                self._connection = None
            self._fail(f"stopped unexpectedly ({exc})")
            self._cancel()
            raise ToolError(self._problem() + " It is started again at the next call.") from None
        except RemoteError as exc:
            raise ToolError(f"MCP server {self.config.name!r}: {exc}") from None

    # reporting ----------------------------------------------------------------------
    def _fail(self, detail: str) -> None:
        with self._lock:
            self.state, self.detail = "failed", detail

    def _problem(self, detail: str | None = None) -> str:
        message = f"MCP server {self.config.name!r} {detail or self.detail}."
        tail = self.log_tail()
        if tail:
            message += f" Its last words: {tail}"
        if self.config.url is None:
            message += f" (log: {self._log_path})"
        return message

    def log_tail(self) -> str:
        """The end of the server's stderr (a few lines, read boundedly)."""
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-3:])[-500:]

    def status(self, tool_names: list[str], cached: bool) -> ServerStatus:
        if self.config.trust:
            approval = "trusted: no approval asked"
        elif self.config.allow:
            approval = f"no approval for: {', '.join(self.config.allow)}"
        else:
            approval = "asks for approval"
        detail = self.detail
        if self.state == "not started" and cached:
            detail = "tools from the cache; starts at the first call"
        log = self._log_path if self.config.url is None else None
        return ServerStatus(
            self.config.name,
            self.config.transport,
            self.state,
            detail,
            tool_names,
            approval,
            log,
        )


def _start_error(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"could not be started: command not found ({exc.filename or exc})"
    if isinstance(exc, OSError):
        return f"could not be started: {exc.strerror or exc}"
    if isinstance(exc, ConnectionLost):
        return "exited during start-up"
    if isinstance(exc, McpFailure):
        return f"failed during start-up: {exc}"
    return f"failed to start: {type(exc).__name__}: {exc}"


class ToolListCache:
    """Each server's last tool list, in ``<data dir>/mcp/tools/<server>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, config: ServerConfig) -> Path:
        return self.folder / f"{config.prefix[:-2]}.json"

    def load(self, config: ServerConfig) -> list[RemoteTool] | None:
        try:
            data = json.loads(self._path(config).read_text("utf-8"))
            if data.get("identity") != config.identity():
                return None
            tools = data["tools"]
            return [RemoteTool(t["name"], t["description"], t["input_schema"]) for t in tools]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, config: ServerConfig, tools: list[RemoteTool]) -> None:
        data = {
            "identity": config.identity(),
            "saved_at": time.time(),
            "tools": [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in tools
            ],
        }
        path = self._path(config)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            partial.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
            partial.replace(path)
        except OSError:
            pass  # no cache: the next session lists the tools again


class McpHub:
    """The MCP servers of a session and the registry tools they provide."""

    def __init__(
        self, configs: Iterable[ServerConfig], *, data_dir: Path, report: Report | None = None
    ) -> None:
        self._loop = LoopThread()
        self.servers = {c.name: McpServer(c, self._loop, data_dir) for c in configs}
        self.cache = ToolListCache(data_dir / "mcp" / "tools")
        self.report = report or _print_warning
        self._registry_ref: weakref.ReferenceType[ToolRegistry] | None = None
        self._names: dict[str, list[str]] = {name: [] for name in self.servers}
        self._known: dict[str, list[RemoteTool]] = {}
        self._cached: set[str] = set()
        self._closed = False
        _OPEN_HUBS.add(self)

    def attach(self, registry: ToolRegistry) -> None:
        """Offer the servers' tools to ``registry``: cached lists at once, the others when
        the registry is first looked at (their servers start now, in the background)."""
        self._registry_ref = weakref.ref(registry)
        for server in self.servers.values():
            server.on_listed = self._listed
            cached = self.cache.load(server.config)
            if cached is not None:
                self._cached.add(server.config.name)
                self._known[server.config.name] = cached
                registry.add_pending(self._ready(server, cached))
            else:
                server.start_in_background()
                registry.add_pending(self._when_started(server))

    def _ready(self, server: McpServer, tools: list[RemoteTool]) -> Callable[[], list[Tool]]:
        return lambda: self._tools(server, tools)

    def _when_started(self, server: McpServer) -> Callable[[], list[Tool]]:
        def load() -> list[Tool]:
            try:
                tools = server.listed_tools()
            except ToolError as exc:
                self.report(f"{exc} Its tools are left out of this session.")
                raise
            return self._tools(server, tools)

        return load

    def _listed(self, server: McpServer, tools: list[RemoteTool]) -> None:
        """A server started (on the loop thread): refresh its cached list; tools it did
        not offer before join the registry at its next look."""
        self.cache.save(server.config, tools)
        self._known[server.config.name] = tools
        registry = self._registry()
        if registry is not None and server.config.name in self._cached:
            known = set(self._names[server.config.name])
            fresh = [t for t in tools if registry_name(server.config.name, t.name) not in known]
            if fresh:
                registry.add_pending(self._ready(server, fresh))

    def _tools(self, server: McpServer, remote: list[RemoteTool]) -> list[Tool]:
        """Registry tools for ``remote``; one that cannot be offered is a load error."""
        config = server.config
        out: list[Tool] = []
        for tool in remote:
            try:
                made = make_tool(
                    config.name,
                    tool,
                    server.call,
                    needs_approval=not config.allows(tool.name),
                    timeout=config.startup_timeout + config.timeout + 10,
                )
            except ToolError as exc:
                registry = self._registry()
                if registry is not None:
                    registry.load_errors.append(f"MCP server {config.name!r}: {exc}")
                continue
            out.append(made)
            self._names[config.name].append(made.name)
        return out

    def _registry(self) -> ToolRegistry | None:
        return self._registry_ref() if self._registry_ref is not None else None

    def status(self) -> list[ServerStatus]:
        """Each server, its state and its tools, for ``/mcp``."""
        out = []
        for name, server in self.servers.items():
            tools = [registry_name(name, t.name) for t in self._known.get(name, [])]
            out.append(server.status(tools, name in self._cached))
        return out

    def close(self) -> None:
        """Stop every server (bounded waits) and the event-loop thread."""
        if self._closed:
            return
        self._closed = True
        for server in self.servers.values():
            server.stop()
        self._loop.stop()
        _OPEN_HUBS.discard(self)


def _print_warning(message: str) -> None:
    import sys

    print(f"thau-chat: warning: {message}", file=sys.stderr)


_OPEN_HUBS: weakref.WeakSet[McpHub] = weakref.WeakSet()
_HUBS: weakref.WeakKeyDictionary[ToolRegistry, McpHub] = weakref.WeakKeyDictionary()


@atexit.register
def close_all() -> None:
    """Stop the servers of every open hub (run at exit)."""
    for hub in list(_OPEN_HUBS):
        hub.close()


def attach(
    registry: ToolRegistry,
    configs: list[ServerConfig],
    *,
    data_dir: Path,
    report: Report | None = None,
) -> McpHub | None:
    """The hub serving ``registry`` (made and attached once); ``None`` without servers."""
    hub = _HUBS.get(registry)
    if hub is None and configs:
        hub = McpHub(configs, data_dir=data_dir, report=report)
        hub.attach(registry)
        _HUBS[registry] = hub
    return hub


def hub_of(registry: ToolRegistry) -> McpHub | None:
    """The hub attached to ``registry``, if any."""
    return _HUBS.get(registry)

"""Which MCP servers THAU uses: the ``mcpServers`` JSON that MCP hosts share, and
``[mcp_servers.NAME]`` tables in ``config.toml``.

::

    {"mcpServers": {
        "files": {"command": "npx",
                  "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
        "docs": {"url": "https://example.org/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}
    }}

Besides the shared keys, THAU reads ``trust`` (no approval for this server's tools),
``allow`` (tool names that need no approval), ``timeout`` (seconds per call),
``startup_timeout`` and ``disabled``. ``${VAR}`` and ``${VAR:-default}`` in strings
come from the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from thau.errors import ConfigError
from thau.prompt_format import to_tool_name

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ServerConfig(BaseModel):
    """One server: a command to start (stdio) or a URL (streamable HTTP)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    type: Literal["stdio", "http", "streamable-http", "streamableHttp", "sse"] | None = None
    trust: bool = False
    allow: list[str] = Field(default_factory=list)
    timeout: float = Field(60.0, gt=0, le=3600, description="seconds one call may take")
    startup_timeout: float = Field(30.0, gt=0, le=600, description="seconds to start and list")
    disabled: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if self.type == "sse":
            raise ValueError(
                "the old SSE transport is not supported; give the server's streamable HTTP "
                "endpoint as url"
            )
        if (self.command is None) == (self.url is None):
            raise ValueError('give either "command" (a stdio server) or "url" (streamable HTTP)')
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {self.url!r})")
        return self

    @property
    def prefix(self) -> str:
        """What this server's tool names start with: ``<server>__``."""
        return to_tool_name(self.name) + "__"

    @property
    def transport(self) -> str:
        """A one-line description: the command line or the URL."""
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])

    def identity(self) -> str:
        """A digest of what decides which server runs (not trust, timeouts or approvals):
        a cached tool list is used only while it matches."""
        fields = self.model_dump(include={"command", "args", "env", "cwd", "url", "headers"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def allows(self, tool: str) -> bool:
        """Whether calls of ``tool`` (the server's name or THAU's) run without approval."""
        return self.trust or tool in self.allow or self.prefix + to_tool_name(tool) in self.allow


def load_servers(
    files: Iterable[Path] = (), tables: Mapping[str, Any] | None = None
) -> list[ServerConfig]:
    """The enabled servers: ``tables`` (``config.toml``'s ``mcp_servers``) first, then each
    file's ``mcpServers`` in order; a later entry of the same name replaces an earlier one."""
    entries: dict[str, tuple[str, Any]] = {}
    for name, entry in (tables or {}).items():
        entries[name] = ("config.toml [mcp_servers]", entry)
    for path in files:
        for name, entry in _read_file(Path(path).expanduser()).items():
            entries[name] = (str(path), entry)
    servers: list[ServerConfig] = []
    prefixes: dict[str, str] = {}
    for name, (where, entry) in entries.items():
        server = _parse(name, entry, where)
        if server.disabled:
            continue
        if server.prefix in prefixes:
            raise ConfigError(
                f"MCP servers {prefixes[server.prefix]!r} and {name!r} ({where}) give the same "
                f"tool-name prefix {server.prefix!r}; rename one of them"
            )
        prefixes[server.prefix] = name
        servers.append(server)
    return servers


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the MCP config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"the MCP config {path} is not valid JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(
            f'the MCP config {path} has no "mcpServers" object; expected '
            '{"mcpServers": {"name": {"command": ..., "args": [...]}}}'
        )
    return servers


def _parse(name: str, entry: Any, where: str) -> ServerConfig:
    if not name.strip():
        raise ConfigError(f"an MCP server in {where} has an empty name")
    if not isinstance(entry, dict):
        raise ConfigError(f"MCP server {name!r} in {where}: expected an object, got {entry!r}")
    try:
        expanded = _expand(entry, name, where)
        return ServerConfig.model_validate({**expanded, "name": name})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"MCP server {name!r} in {where}: {problems}") from None


def _expand(value: Any, name: str, where: str) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string, from the environment."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            variable, default = match.group(1), match.group(2)
            found = os.environ.get(variable)
            if found is None and default is None:
                raise ConfigError(
                    f"MCP server {name!r} in {where} uses ${{{variable}}}, which is not set"
                )
            return found if found is not None else default

        return _VARIABLE.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(v, name, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, name, where) for k, v in value.items()}
    return value

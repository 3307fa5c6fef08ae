"""MCP server lists: the shared mcpServers JSON, config.toml tables, settings, schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thau.chat.config import load_settings
from thau.errors import ConfigError
from thau.prompt_format import is_tool_name
from thau.tools.mcp_config import ServerConfig, load_servers
from thau.tools.mcp_tools import args_model, registry_name
from thau.tools.registry import Tool, ToolRegistry


def write(path: Path, servers: Any) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), "utf-8")
    return path


def test_reads_stdio_and_http_servers_from_mcp_servers_json(tmp_path: Path) -> None:
    config = write(
        tmp_path / "mcp.json",
        {
            "files": {"command": "npx", "args": ["-y", "server-files", "/tmp"], "env": {"A": "1"}},
            "docs": {"type": "http", "url": "https://example.org/mcp", "headers": {"X": "y"}},
            "off": {"command": "nothing", "disabled": True},
        },
    )
    files, docs = load_servers([config])
    assert (files.name, files.command, files.args, files.env) == (
        "files",
        "npx",
        ["-y", "server-files", "/tmp"],
        {"A": "1"},
    )
    assert (docs.url, docs.headers) == ("https://example.org/mcp", {"X": "y"})
    assert files.transport == "npx -y server-files /tmp"
    assert not files.trust and files.allow == [] and files.timeout == 60


def test_config_toml_tables_come_first_and_files_replace_them(tmp_path: Path) -> None:
    later = write(tmp_path / "b.json", {"one": {"command": "from-file"}})
    tables = {"one": {"command": "from-toml"}, "two": {"url": "http://127.0.0.1:1/mcp"}}
    servers = {s.name: s for s in load_servers([later], tables)}
    assert servers["one"].command == "from-file"
    assert servers["two"].url == "http://127.0.0.1:1/mcp"


def test_variables_are_expanded_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    config = write(
        tmp_path / "mcp.json",
        {
            "docs": {
                "url": "https://example.org/mcp",
                "headers": {"Authorization": "Bearer ${DOCS_TOKEN}", "Y": "${NOT_SET:-fallback}"},
            }
        },
    )
    [docs] = load_servers([config])
    assert docs.headers == {"Authorization": "Bearer s3cret", "Y": "fallback"}
    write(config, {"docs": {"url": "https://example.org/${MISSING_VAR}"}})
    with pytest.raises(ConfigError, match=r"uses \$\{MISSING_VAR\}, which is not set"):
        load_servers([config])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the MCP config"),
        ("{not json", "is not valid JSON"),
        ('{"servers": {}}', 'has no "mcpServers" object'),
        ('{"mcpServers": {"x": {}}}', 'give either "command"'),
        ('{"mcpServers": {"x": {"command": "a", "url": "http://h/mcp"}}}', 'give either "command"'),
        ('{"mcpServers": {"x": {"url": "ftp://h"}}}', "url must start with http"),
        ('{"mcpServers": {"x": {"type": "sse", "url": "http://h/sse"}}}', "SSE transport"),
        ('{"mcpServers": {"x": {"command": "a", "timeout": -1}}}', "timeout"),
        ('{"mcpServers": {"x": ["a"]}}', "expected an object"),
        ('{"mcpServers": {"a-b": {"command": "a"}, "A_B": {"command": "b"}}}', "same tool-name"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "mcp.json"
    if content is not None:
        path.write_text(content, "utf-8")
    with pytest.raises(ConfigError, match=message):
        load_servers([path])


def test_settings_take_files_from_flags_env_and_config_toml(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = isolated_dirs / "config" / "thau" / "config.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text(
        'mcp_config = ["/etc/a.json"]\n[mcp_servers.local]\ncommand = "srv"\ntrust = true\n'
    )
    settings = load_settings()
    assert settings.mcp_config == [Path("/etc/a.json")]
    assert settings.mcp_servers == {"local": {"command": "srv", "trust": True}}
    monkeypatch.setenv("THAU_MCP_CONFIG", "/x/one.json:/x/two.json")
    assert load_settings().mcp_config == [Path("/x/one.json"), Path("/x/two.json")]
    assert load_settings(mcp_config=["/flag.json"]).mcp_config == [Path("/flag.json")]


def test_approval_is_lifted_by_trust_or_the_allow_list() -> None:
    plain = ServerConfig(name="Files", command="x")
    trusted = ServerConfig(name="Files", command="x", trust=True)
    listed = ServerConfig(name="Files", command="x", allow=["read_file", "files__list_dir"])
    assert not plain.allows("read_file")
    assert trusted.allows("anything")
    assert listed.allows("read_file") and listed.allows("list_dir")
    assert not listed.allows("write_file")


def test_tool_names_fit_the_tool_name_rule() -> None:
    assert registry_name("files", "read_file") == "files__read_file"
    assert registry_name("My Server", "Odd Name!") == "my_server__odd_name_"
    assert registry_name("1st", "x") == "_1st__x"
    assert all(is_tool_name(registry_name(s, t)) for s, t in [("a.b", "c-d"), ("ñ", "ü")])


SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "depth": {"type": "integer", "minimum": 0, "default": 1},
        "not-an-identifier": {"type": "boolean"},
        "json": {"type": "string"},
    },
    "required": ["path"],
    "additionalProperties": False,
}


def test_arguments_are_checked_against_the_servers_json_schema() -> None:
    model = args_model("files__list", SCHEMA)
    tool = Tool("files__list", "List.", model, lambda a, c: None)
    registry = ToolRegistry([tool])
    _, args = registry.validate("files__list", {"path": "/tmp", "not-an-identifier": True})
    assert args.model_dump(exclude_unset=True) == {"path": "/tmp", "not-an-identifier": True}
    for bad, message in [
        ({}, "'path' is a required property"),
        ({"path": ""}, "path: '' should be non-empty"),
        ({"path": "/", "depth": -1}, "depth: -1 is less than the minimum of 0"),
        ({"path": "/", "extra": 1}, "Additional properties are not allowed"),
    ]:
        with pytest.raises(Exception, match=message):
            registry.validate("files__list", bad)
    assert tool.signature() == "files__list(path, depth=1)"


def test_an_invalid_schema_is_refused_with_its_reason() -> None:
    from thau.errors import ToolError

    with pytest.raises(ToolError, match="input schema is invalid"):
        args_model("x__y", {"type": "object", "properties": {"a": {"type": "no-such-type"}}})
    with pytest.raises(ToolError, match="not a JSON object"):
        args_model("x__y", {"type": "array"})

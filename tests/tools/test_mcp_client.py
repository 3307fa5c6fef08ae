"""THAU's MCP client against real servers: the SDK-written fixture over stdio and HTTP."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools.mcp_support import fixture_entry, http_fixture
from thau.tools import mcp_client
from thau.tools.mcp_client import McpHub
from thau.tools.mcp_config import load_servers
from thau.tools.registry import ToolContext, ToolOutcome, ToolRegistry

pytestmark = pytest.mark.timeout(120)

MakeHub = Callable[..., tuple[ToolRegistry, McpHub]]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[MakeHub]:
    """``make_hub(name=entry, ...)``: a registry with those servers attached."""
    hubs: list[McpHub] = []
    reports: list[str] = []

    def make(**servers: Any) -> tuple[ToolRegistry, McpHub]:
        registry = ToolRegistry()
        hub = mcp_client.attach(
            registry, load_servers([], servers), data_dir=tmp_path, report=reports.append
        )
        assert hub is not None
        hub.reports = reports  # type: ignore[attr-defined]
        hubs.append(hub)
        return registry, hub

    yield make
    for hub in hubs:
        hub.close()


def call(registry: ToolRegistry, tool_name: str, data_dir: Path, **arguments: Any) -> ToolOutcome:
    tool, args = registry.validate(tool_name, arguments)
    return registry.execute(tool, args, ToolContext(data_dir=data_dir, approved=True))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToolRegistry, Path]]:
    """One fixture server for the tests that only call it."""
    data = tmp_path_factory.mktemp("shared")
    registry = ToolRegistry()
    hub = mcp_client.attach(
        registry,
        load_servers([], {"fixture": fixture_entry(env={"FIXTURE_VALUE": "42"})}),
        data_dir=data,
    )
    assert hub is not None
    yield registry, data
    hub.close()


def test_tools_are_listed_with_their_descriptions_and_schemas(
    shared: tuple[ToolRegistry, Path],
) -> None:
    registry, _ = shared
    names = registry.names()
    for name in ("add", "greet", "fail", "slow", "crash", "picture", "env", "odd_name_"):
        assert f"fixture__{name}" in names
    add = registry.get("fixture__add")
    assert add.description == "Add two integers."
    schema = add.parameters()
    assert schema["required"] == ["a", "b"]
    assert schema["properties"]["a"]["type"] == "integer"
    assert add.native_schema()["function"]["name"] == "fixture__add"
    assert add.signature() == "fixture__add(a, b)"
    assert registry.load_errors == []


def test_calls_pass_arguments_and_return_structured_content(
    shared: tuple[ToolRegistry, Path],
) -> None:
    registry, data = shared
    assert call(registry, "fixture__add", data, a=2, b=40).result == {"result": 42}
    assert call(registry, "fixture__greet", data, name="Ana", shout=True).result == {
        "result": "HELLO ANA"
    }
    assert call(registry, "fixture__odd_name_", data).result == {"result": "odd"}
    assert call(registry, "fixture__env", data, name="FIXTURE_VALUE").result == {"result": "42"}


def test_bad_arguments_never_reach_the_server(shared: tuple[ToolRegistry, Path]) -> None:
    registry, _ = shared
    with pytest.raises(Exception, match="a: 'two' is not of type 'integer'"):
        registry.validate("fixture__add", {"a": "two", "b": 1})


def test_an_error_result_is_a_failed_call_with_the_servers_message(
    shared: tuple[ToolRegistry, Path],
) -> None:
    registry, data = shared
    outcome = call(registry, "fixture__fail", data, reason="no disk")
    assert not outcome.ok
    assert "failed on purpose: no disk" in (outcome.error or "")


def test_images_are_saved_in_the_data_dir(shared: tuple[ToolRegistry, Path]) -> None:
    registry, data = shared
    result = call(registry, "fixture__picture", data).result
    assert result["text"] == "a red square"
    [path] = [Path(p) for p in result["images"]]
    assert path.parent == data / "images" and path.suffix == ".png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_slow_call_times_out_and_the_server_keeps_serving(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    registry, hub = make_hub(fixture=fixture_entry(timeout=1))
    outcome = call(registry, "fixture__slow", tmp_path, seconds=30)
    assert not outcome.ok
    assert "did not answer slow within 1 s" in (outcome.error or "")
    assert outcome.elapsed_s < 10
    assert call(registry, "fixture__add", tmp_path, a=1, b=1).result == {"result": 2}
    assert hub.status()[0].state == "ready"


def test_a_crash_is_reported_and_the_next_call_starts_the_server_again(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    registry, hub = make_hub(fixture=fixture_entry())
    outcome = call(registry, "fixture__crash", tmp_path)
    assert not outcome.ok
    error = outcome.error or ""
    assert "MCP server 'fixture' stopped unexpectedly" in error
    assert "crashing on purpose" in error  # the end of its stderr
    assert "started again at the next call" in error
    assert hub.status()[0].state == "failed"
    assert call(registry, "fixture__add", tmp_path, a=3, b=4).result == {"result": 7}
    assert hub.status()[0].state == "ready"


def test_a_server_that_cannot_start_leaves_the_others_working(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    registry, hub = make_hub(
        missing={"command": str(tmp_path / "no-such-server")},
        fixture=fixture_entry(),
    )
    names = registry.names()
    assert "fixture__add" in names
    assert not [n for n in names if n.startswith("missing__")]
    [problem] = registry.load_errors
    assert "MCP server 'missing' could not be started: command not found" in problem
    assert any("left out of this session" in r for r in hub.reports)  # type: ignore[attr-defined]
    assert {s.name: s.state for s in hub.status()} == {"missing": "failed", "fixture": "ready"}


def test_a_server_that_exits_at_start_says_why(make_hub: MakeHub) -> None:
    code = "import sys; print('no API key given', file=sys.stderr); sys.exit(2)"
    registry, _ = make_hub(broken={"command": sys.executable, "args": ["-c", code]})
    assert len(registry) == 0
    [problem] = registry.load_errors
    assert "MCP server 'broken' exited during start-up" in problem
    assert "no API key given" in problem


def test_a_server_that_never_answers_is_stopped_after_its_startup_timeout(
    make_hub: MakeHub,
) -> None:
    code = "import time; time.sleep(120)"
    registry, hub = make_hub(
        mute={"command": sys.executable, "args": ["-c", code], "startup_timeout": 1}
    )
    assert len(registry) == 0
    assert "did not start within 1 s" in registry.load_errors[0]
    hub.close()  # bounded, although the server never spoke


def test_a_cached_tool_list_registers_tools_without_starting_the_server(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    first, hub = make_hub(fixture=fixture_entry())
    assert "fixture__add" in first
    hub.close()
    log = tmp_path / "mcp" / "logs" / "fixture.log"
    log.unlink()

    second, hub = make_hub(fixture=fixture_entry())
    assert "fixture__add" in second.names()
    assert not log.exists()  # not started
    [status] = hub.status()
    assert status.state == "not started"
    assert "fixture__greet" in status.tools and "starts at the first call" in status.detail
    assert call(second, "fixture__add", tmp_path, a=20, b=22).result == {"result": 42}
    assert log.exists() and hub.status()[0].state == "ready"


def test_a_changed_server_config_ignores_the_cache(make_hub: MakeHub, tmp_path: Path) -> None:
    _, hub = make_hub(fixture=fixture_entry())
    hub.close()
    changed = fixture_entry(env={"SOMETHING": "else"})
    registry, hub = make_hub(fixture=changed)
    assert hub.status()[0].state == "starting"  # listed anew, in the background
    assert "fixture__add" in registry


def test_approval_is_asked_unless_the_server_is_trusted_or_the_tool_allowed(
    make_hub: MakeHub,
) -> None:
    registry, _ = make_hub(
        plain=fixture_entry(),
        trusted=fixture_entry(trust=True),
        listed=fixture_entry(allow=["add", "listed__greet"]),
    )
    assert registry.get("plain__add").needs_approval
    assert not registry.get("trusted__crash").needs_approval
    assert not registry.get("listed__add").needs_approval
    assert not registry.get("listed__greet").needs_approval
    assert registry.get("listed__fail").needs_approval


def test_streamable_http_server_with_headers(make_hub: MakeHub, tmp_path: Path) -> None:
    with http_fixture(header="X-Fixture-Key=open-sesame") as url:
        registry, _ = make_hub(
            remote={"url": url, "headers": {"X-Fixture-Key": "open-sesame"}},
            refused={"url": url},
        )
        assert call(registry, "remote__add", tmp_path, a=5, b=6).result == {"result": 11}
        assert call(registry, "remote__greet", tmp_path, name="Eva").result == {
            "result": "hello Eva"
        }
        assert not [n for n in registry.names() if n.startswith("refused__")]
        assert any("MCP server 'refused'" in e for e in registry.load_errors)

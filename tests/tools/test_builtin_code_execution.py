"""The code_execution tool through the registry, the sandbox's settings and its capture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from thau.errors import ConfigError, ToolArgumentsInvalid
from thau.tools import code_execution, sandbox_guard
from thau.tools.registry import ToolContext, ToolRegistry
from thau.tools.sandbox import (
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    bwrap_problem,
    mode_from_env,
)
from thau.tools.sandbox_capture import StreamCapture

RESULT_KEYS = {
    "stdout",
    "stderr",
    "exit_code",
    "timed_out",
    "signal",
    "stdout_truncated",
    "stderr_truncated",
    "stdout_bytes",
    "stderr_bytes",
    "sandbox",
    "warning",
    "duration_s",
}


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([code_execution.tool])


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A PATH without bubblewrap on it (the probe's cache is cleared around the test)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    bwrap_problem.cache_clear()
    yield
    bwrap_problem.cache_clear()


def test_the_tool_runs_code_and_returns_the_documented_result(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    sandbox = Sandbox("fallback", SandboxLimits(timeout_s=5))
    context = ToolContext(data_dir=tmp_path, extra={"sandbox": sandbox})
    tool, args = registry.validate("code_execution", {"code": "print(6 * 7)"})
    outcome = registry.execute(tool, args, context)
    assert outcome.ok, outcome.error
    assert set(outcome.result) == RESULT_KEYS
    assert outcome.result["stdout"] == "42\n"
    assert outcome.result["exit_code"] == 0
    assert outcome.result["sandbox"] == "fallback"
    assert "Weaker isolation" in outcome.result["warning"]


def test_the_tool_asks_for_approval_and_previews_the_code(registry: ToolRegistry) -> None:
    tool, args = registry.validate("code_execution", {"code": "print('hi')", "language": "py"})
    assert tool.needs_approval
    assert tool.preview is not None
    assert tool.preview(args) == ("python", "print('hi')")
    assert args.language == "python"
    context = ToolContext(data_dir=Path("."), env={"THAU_SANDBOX_TIMEOUT": "7"})
    assert tool.timeout_for(context) == 7 + 15  # the sandbox stops the code first
    bare = ToolContext(data_dir=Path("."), env={})
    assert tool.timeout_for(bare) > SandboxLimits().timeout_s


@pytest.mark.parametrize(
    "arguments",
    [{}, {"code": ""}, {"code": "print(1)", "language": "javascript"}, {"language": "python"}],
)
def test_invalid_arguments_are_refused(registry: ToolRegistry, arguments: dict) -> None:
    with pytest.raises(ToolArgumentsInvalid):
        registry.validate("code_execution", arguments)


def test_the_environment_chooses_the_fallback_and_the_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THAU_SANDBOX", "fallback")
    monkeypatch.setenv("THAU_SANDBOX_TIMEOUT", "1.5")
    monkeypatch.setenv("THAU_SANDBOX_OUTPUT_BYTES", "100")
    args = code_execution.CodeExecutionArgs(code="print('y' * 1000)\nwhile True: pass\n")
    result = code_execution.run(args, ToolContext(data_dir=tmp_path))
    assert result["sandbox"] == "fallback"
    assert result["timed_out"] and 1.5 <= result["duration_s"] < 3.5
    assert result["stdout_truncated"] and result["stdout_bytes"] == 1001


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THAU_SANDBOX": "docker"}, "THAU_SANDBOX"),
        ({"THAU_SANDBOX_TIMEOUT": "soon"}, "not a number"),
        ({"THAU_SANDBOX_MEMORY_MB": "-1"}, "must be positive"),
    ],
)
def test_bad_settings_say_which_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mode_from_env(env)
        SandboxLimits.from_env(env)


def test_forced_bwrap_without_bubblewrap_says_how_to_fix_it(no_bwrap: None) -> None:
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        Sandbox("bwrap").run("print(1)")


def test_auto_without_bubblewrap_falls_back_and_warns(no_bwrap: None) -> None:
    result = Sandbox("auto", SandboxLimits(timeout_s=5)).run("print('ran')")
    assert result.sandbox == "fallback"
    assert result.stdout == "ran\n"
    assert "bubblewrap (bwrap) is not installed" in result.warning


def test_a_guard_that_cannot_apply_its_layers_stops_before_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter the guard cannot build (an unknown machine) means nothing runs at all."""
    monkeypatch.setattr(sandbox_guard, "seccomp_arch", lambda: "vax")
    marker = tmp_path / "ran"
    with pytest.raises(SandboxUnavailable, match="could not be set up"):
        Sandbox("fallback", SandboxLimits(timeout_s=5)).run(f"open({str(marker)!r}, 'w')")
    assert not marker.exists()


def test_capture_keeps_head_and_tail() -> None:
    capture = StreamCapture(10)
    for piece in (b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"):
        capture.feed(piece)
    assert capture.total == 26 and capture.truncated
    assert capture.text() == "abcde\n[... 16 bytes omitted ...]\nvwxyz"


def test_capture_of_short_output_is_whole() -> None:
    capture = StreamCapture(10)
    capture.feed("héllo".encode())
    assert not capture.truncated
    assert capture.text() == "héllo"


def test_seccomp_programs_are_well_formed() -> None:
    for arch in ("x86_64", "aarch64"):
        program = sandbox_guard.seccomp_program(arch, 4242)
        assert len(program) % 8 == 0 and 20 < len(program) // 8 < 256

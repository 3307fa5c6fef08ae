"""The result views: each built-in tool drawn for a person, everything else generic."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rich.console import Console

from thau.chat.agent import ToolFinished
from thau.chat.parser import ToolCall
from thau.chat.render import call_panel, result_panel
from thau.chat.result_views import ViewContext, ViewMemory, view_result
from thau.tools.code_execution import tool as code_tool
from thau.tools.registry import ToolContext, ToolOutcome
from thau.tools.sandbox import Sandbox, SandboxLimits


def shown(
    outcome: ToolOutcome, context: ViewContext | None = None, saved: Path | None = None, **kw: Any
) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    event = ToolFinished(ToolCall(outcome.name, {}, ""), outcome, saved)
    console.print(result_panel(event, context=context, **kw))
    return console.file.getvalue()  # type: ignore[attr-defined]


def ok(name: str, result: Any) -> ToolOutcome:
    return ToolOutcome(name, True, result, elapsed_s=0.25)


# -- code_execution: a real sandbox run ----------------------------------------------
@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    sandbox = Sandbox("fallback", SandboxLimits(timeout_s=3))
    programs = {
        "hello": "print('hola')\nprint(6 * 7)",
        "raises": "print('before')\n1 / 0",
        "exits": "import sys\nsys.exit(4)",
        "silent": "x = 1",
        "slow": "while True: pass",
    }
    return {name: sandbox.run(code).as_dict() for name, code in programs.items()}


def test_code_shows_its_output_and_not_its_json(runs: dict[str, dict[str, Any]]) -> None:
    text = shown(ok("code_execution", runs["hello"]))
    assert "code_execution ok · 0.25 s" in text and "hola" in text and "42" in text
    assert "stdout" not in text and "exit_code" not in text and "{" not in text


def test_code_status_says_what_went_wrong_only_when_something_did(
    runs: dict[str, dict[str, Any]],
) -> None:
    raised = shown(ok("code_execution", runs["raises"]))
    assert "code_execution exit 1" in raised and "before" in raised
    assert "ZeroDivisionError: division by zero" in raised and "stderr" in raised
    assert "code_execution exit 4" in shown(ok("code_execution", runs["exits"]))
    assert "(no output)" in shown(ok("code_execution", runs["silent"]))
    assert "code_execution timed out" in shown(ok("code_execution", runs["slow"]))
    killed = dict(runs["silent"], exit_code=None, signal="SIGKILL")
    assert "killed by SIGKILL" in shown(ok("code_execution", killed))


def test_the_sandbox_warning_is_shown_once_per_session(runs: dict[str, dict[str, Any]]) -> None:
    warning = runs["hello"]["warning"]
    assert warning and "Weaker isolation" in warning
    context = ViewContext(memory=ViewMemory())
    first = shown(ok("code_execution", runs["hello"]), context)
    again = shown(ok("code_execution", runs["raises"]), context)
    assert "Weaker isolation" in first and "Weaker isolation" not in again
    assert "Weaker isolation" in shown(ok("code_execution", runs["hello"]))  # a new session


def test_output_the_sandbox_cut_says_so() -> None:
    result = {"stdout": "x" * 50, "stderr": "", "exit_code": 0, "stdout_truncated": True}
    text = shown(ok("code_execution", result | {"stdout_bytes": 2_000_000}))
    assert "[stdout cut by the sandbox's output limit of 2000000 bytes]" in text


def test_the_code_call_shows_the_code() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(
        call_panel(ToolCall("code_execution", {"code": "print(1)\nx = 2"}, ""), code_tool)
    )
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "print(1)\n" in text.replace(" ", "").replace("│", "") and '"code"' not in text


# -- web_search ------------------------------------------------------------------------
SEARCH = {
    "query": "ollama tools",
    "backend": "searxng",
    "cached": True,
    "results": [
        {
            "title": "Tool support · Ollama Blog",
            "url": "https://ollama.com/blog/tool-support",
            "snippet": "Ollama now supports tool calling with popular models. " * 5,
        },
        {"title": "", "url": "https://example.org/x", "snippet": ""},
    ],
}


def test_search_is_a_numbered_list_with_one_line_snippets() -> None:
    text = shown(ok("web_search", SEARCH))
    lines = text.splitlines()
    assert any("1. Tool support · Ollama Blog" in line for line in lines)
    assert any("https://ollama.com/blog/tool-support" in line for line in lines)
    snippet = [line for line in lines if "Ollama now supports" in line]
    assert len(snippet) == 1 and snippet[0].rstrip(" │").endswith("…")
    assert any("2. https://example.org/x" in line for line in lines)  # no title: the link
    assert "searxng · cached" in text and '"url"' not in text


def test_no_results_says_so() -> None:
    text = shown(ok("web_search", {"query": "zzz", "backend": "ddgs", "results": []}))
    assert "No results for 'zzz'." in text


# -- generate_image --------------------------------------------------------------------
def image_result(path: Path) -> dict[str, Any]:
    return {
        "image_url": "http://127.0.0.1:8000/vision/image/cat.png",
        "path": str(path),
        "seed": 42,
        "width": 512,
        "height": 512,
        "metadata": {},
    }


def test_image_shows_a_preview_on_a_terminal_then_path_and_url(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    Image.new("RGB", (32, 32), (0, 128, 255)).save(path)
    on_terminal = shown(ok("generate_image", image_result(path)), ViewContext(terminal=True))
    assert "▀" in on_terminal
    assert f"file {path}" in on_terminal and "url  http://127.0.0.1:8000/vision/image/cat.png"
    assert "512×512 · seed 42" in on_terminal
    in_a_log = shown(ok("generate_image", image_result(path)))
    assert "▀" not in in_a_log and f"file {path}" in in_a_log


def test_image_for_a_terminal_that_draws_images_itself(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(path)
    context = ViewContext(terminal=True, inline_images="kitty")
    view = view_result(ok("generate_image", image_result(path)), context)
    assert view.image == path
    jpeg = tmp_path / "cat.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    assert view_result(ok("generate_image", image_result(jpeg)), context).image is None


def test_an_image_that_is_gone_says_so(tmp_path: Path) -> None:
    text = shown(ok("generate_image", image_result(tmp_path / "gone.png")), ViewContext(True))
    assert "not there any more" in text


# -- everything else -------------------------------------------------------------------
def test_a_plugin_result_is_an_outline() -> None:
    result = {"city": "Lima", "temp": 21.5, "days": [{"day": "mon", "rain": False}], "alerts": []}
    text = shown(ok("weather", result))
    for line in (
        "city: Lima",
        "temp: 21.5",
        "days:",
        "- day: mon",
        "rain: false",
        "alerts: (none)",
    ):
        assert line in text
    assert '"city"' not in text


@pytest.mark.parametrize(
    ("result", "expected", "absent"),
    [
        ("21 °C in Lima\nsunny", "21 °C in Lima", '"'),
        ({"temperature": 21, "unit": "C"}, "temperature: 21", '"'),
        ({"text": "two lines\nof text", "images": ["/tmp/a.png"]}, "- /tmp/a.png", '"'),
        (
            {"content": [{"type": "text", "text": "from MCP"}], "structuredContent": {"a": 1}},
            "from MCP",
            "structuredContent",
        ),
        ({"content": [], "structuredContent": {"a": 1}}, "a: 1", "structuredContent"),
    ],
)
def test_mcp_tools_get_the_generic_view(result: Any, expected: str, absent: str) -> None:
    text = shown(ok("weather__now", result))
    assert expected in text and absent not in text


def test_an_mcp_error_result_is_red_and_says_error() -> None:
    result = {"content": [{"type": "text", "text": "no such city"}], "isError": True}
    assert "weather__now error" in shown(ok("weather__now", result))


def test_a_built_in_name_with_a_foreign_shape_falls_back_to_the_generic_view() -> None:
    text = shown(ok("web_search", {"hits": 3}))
    assert "hits: 3" in text


def test_a_failure_is_red_and_says_failed() -> None:
    text = shown(ToolOutcome("web_search", False, error="rate limited; wait a minute"))
    assert "web_search failed" in text and "rate limited; wait a minute" in text


def test_a_long_result_is_cut_and_says_where_the_rest_is(tmp_path: Path) -> None:
    saved = tmp_path / "big.json"
    text = shown(ok("plugin", {"lines": [f"line {i}" for i in range(1000)]}), saved=saved)
    flat = text.replace("\n", "").replace("│", "").replace(" ", "")
    assert "line 10" in text and "line 999" not in text
    assert f"morecharactersnotshown;fullresultin{saved}]" in flat
    short = shown(ok("plugin", {"a": 1}), saved=saved)
    assert f"[fullresultin{saved}]" in short.replace("│", "").replace(" ", "").replace("\n", "")


def test_a_saved_result_shown_whole_says_where_it_is_once(tmp_path: Path) -> None:
    saved = tmp_path / "code_execution-1.json"
    result = {"stdout": "out", "stderr": "err", "exit_code": 0}
    text = shown(ok("code_execution", result), saved=saved)
    assert text.count("[full result in") == 1


def test_verbose_adds_the_json(tmp_path: Path) -> None:
    text = shown(ok("weather", {"city": "Lima"}), verbose=True)
    assert "city: Lima" in text and '"city": "Lima"' in text and "JSON" in text


def test_a_real_code_tool_through_the_registry_is_drawn(tmp_path: Path) -> None:
    from thau.tools.registry import ToolRegistry

    registry = ToolRegistry([code_tool])
    tool, args = registry.validate("code_execution", {"code": "print(2 ** 10)"})
    context = ToolContext(tmp_path, env={"THAU_SANDBOX": "fallback"}, approved=True)
    outcome = registry.execute(tool, args, context)
    assert outcome.ok
    assert "1024" in shown(outcome)

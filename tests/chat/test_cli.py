"""thau-chat's command line: one-shot, --json, --run-tool, errors and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.scripted import ScriptedBackend, make_registry
from thau.chat import cli, session
from thau.chat.backends import Selection
from thau.errors import BackendUnavailable

Script = Callable[[list[list[Any]]], ScriptedBackend]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Script:
    """Run the CLI in-process on a scripted backend and the test tools."""
    holder: dict[str, ScriptedBackend] = {}

    def use(replies: list[list[Any]]) -> ScriptedBackend:
        holder["b"] = ScriptedBackend(replies)
        return holder["b"]

    monkeypatch.setattr(session, "create_backend", lambda s: Selection(holder["b"], "scripted"))
    monkeypatch.setattr(
        session.ToolRegistry, "from_entry_points", classmethod(lambda c: make_registry())
    )
    return use


def test_help_is_light() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from thau.chat.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = {'torch', 'transformers', 'diffusers', 'rich', 'prompt_toolkit', 'llama_cpp',"
        " 'pydantic'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_oneshot_prints_answer_and_tool_results(scripted: Script, capsys: Any) -> None:
    scripted([['<TOOL:echo>{"text": "hola"}</TOOL>'], ["Dice ", "hola."]])
    assert cli.main(["--message", "repite hola"]) == 0
    out = capsys.readouterr().out
    assert '[echo] {"text":"hola"}' in out
    assert "[echo -> ok]\n" in out and "echo: hola" in out  # drawn for people, not JSON
    assert '{"echo"' not in out
    assert out.rstrip().endswith("Dice hola.")


def test_oneshot_shows_code_output_not_its_json() -> None:
    """The README's first command: the code's output, the exit status only when not 0."""
    import io

    from thau.chat.agent import ToolFinished
    from thau.chat.oneshot import _show_result
    from thau.chat.parser import ToolCall
    from thau.tools.registry import ToolOutcome

    result = {"stdout": "42\n", "stderr": "", "exit_code": 0, "timed_out": False}
    result |= {"signal": None, "stdout_truncated": False, "stderr_truncated": False}
    result |= {"stdout_bytes": 3, "stderr_bytes": 0, "sandbox": "bwrap", "warning": None}
    call = ToolCall("code_execution", {"code": "print(6 * 7)"}, raw="")
    out = io.StringIO()
    _show_result(out, ToolFinished(call, ToolOutcome("code_execution", True, result)))
    assert out.getvalue().startswith("[code_execution -> ok]\n42")
    assert "stdout_bytes" not in out.getvalue() and "exit_code" not in out.getvalue()


def test_oneshot_json_document(scripted: Script, capsys: Any) -> None:
    scripted([['<TOOL:echo>{"text": "a"}</TOOL>'], ["fin"]])
    assert cli.main(["--message", "x", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"] == "fin"
    assert doc["tool_calls"][0]["name"] == "echo"
    assert doc["tool_calls"][0]["arguments"] == {"text": "a"}
    assert doc["tool_calls"][0]["result"] == {"echo": "a"}
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert doc["timings"]["steps"] == 2 and doc["timings"]["total_s"] >= 0
    saved = json.loads(Path(doc["conversation"]).read_text())
    assert saved["messages"] == doc["messages"]


def test_oneshot_continues_a_saved_conversation(scripted: Script, capsys: Any) -> None:
    scripted([["uno"]])
    assert cli.main(["--message", "primero", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    backend = scripted([["dos"]])
    assert cli.main(["--message", "segundo", "--json", "--load", first["conversation"]]) == 0
    second = json.loads(capsys.readouterr().out)
    assert [m["content"] for m in second["messages"]] == ["primero", "uno", "segundo", "dos"]
    assert [m["role"] for m in backend.requests[0]["messages"]][-3:] == [
        "user",
        "assistant",
        "user",
    ]


def test_oneshot_stdin_non_utf8(scripted: Script, capsys: Any, monkeypatch: Any) -> None:
    backend = scripted([["ok"]])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 con leche")))
    assert cli.main(["--message", "-"]) == 0
    assert "not valid UTF-8" in capsys.readouterr().err
    assert backend.requests[0]["messages"][-1]["content"] == "caf\ufffd con leche"


def test_oneshot_backend_failure_exits_nonzero(scripted: Script, capsys: Any) -> None:
    message = "Ollama is not answering at http://x. Start it with `ollama serve`."
    scripted([[BackendUnavailable(message)]])
    assert cli.main(["--message", "hi"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"thau-chat: error: {message}"


def test_oneshot_refuses_approval_without_terminal(
    scripted: Script, capsys: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    scripted([['<TOOL:guarded>{"text": "x"}</TOOL>'], ["ok"]])
    assert cli.main(["--message", "run it", "--json"]) == 0
    call = json.loads(capsys.readouterr().out)["tool_calls"][0]
    assert call["ok"] is False and "--yes" in call["error"]
    scripted([['<TOOL:guarded>{"text": "x"}</TOOL>'], ["ok"]])
    assert cli.main(["--message", "run it", "--json", "--yes"]) == 0
    assert json.loads(capsys.readouterr().out)["tool_calls"][0]["ok"] is True


def test_empty_message_and_bad_flag_are_usage_errors(capsys: Any) -> None:
    assert cli.main(["--message", "   "]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli.main(["--message", "x", "--max-steps", "0"]) == 2
    assert "max_steps" in capsys.readouterr().err


def test_run_tool(monkeypatch: Any, capsys: Any) -> None:
    from thau.chat import run_tool

    monkeypatch.setattr(
        run_tool.ToolRegistry, "from_entry_points", classmethod(lambda c: make_registry())
    )
    assert cli.main(["--run-tool", "echo", "--args", '{"text": "z", "times": 2}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == {"echo": "zz"}
    assert cli.main(["--run-tool", "echo", "--args", '{"times": 2}']) == 2
    assert "text: Field required" in capsys.readouterr().err
    assert cli.main(["--run-tool", "nope"]) == 2
    assert "unknown tool 'nope'" in capsys.readouterr().err
    assert cli.main(["--run-tool", "echo", "--args", "{bad"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert cli.main(["--run-tool", "boom"]) == 1
    assert "the tool broke" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli.main(["--run-tool", "guarded", "--args", '{"text": "t"}']) == 1
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["--run-tool", "guarded", "--args", '{"text": "t"}', "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == {"ran": "t", "approved": True}

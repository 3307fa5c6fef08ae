"""``thau-chat --message ... --json-stream``: one JSON event per line, always ending with
``turn_done`` or ``error``; in-process on a scripted backend, then the real command
against the fake Ollama server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.scripted import ScriptedBackend, make_registry
from tests.servers.base import Reply
from tests.servers.fake_ollama import FakeOllama
from thau.chat import cli, session
from thau.chat.backends import Selection
from thau.chat.event_stream import EVENT_SCHEMA
from thau.errors import BackendUnavailable, StreamInterrupted

ROOT = Path(__file__).resolve().parents[2]
Script = Callable[[list[list[Any]]], ScriptedBackend]
VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Script:
    """Run the CLI in-process on a scripted backend and the test tools."""
    holder: dict[str, ScriptedBackend] = {}

    def use(replies: list[list[Any]]) -> ScriptedBackend:
        holder["b"] = ScriptedBackend(replies)
        return holder["b"]

    monkeypatch.setenv("THAU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(session, "create_backend", lambda s: Selection(holder["b"], "scripted"))
    monkeypatch.setattr(
        session.ToolRegistry, "from_entry_points", classmethod(lambda c: make_registry())
    )
    return use


def events_of(stdout: str) -> list[dict[str, Any]]:
    """Every line parsed and checked against the schema; the stream's rules checked."""
    lines = stdout.splitlines()
    assert lines and all(line.strip() for line in lines)
    events = [json.loads(line) for line in lines]
    for event in events:
        VALIDATOR.validate(event)
    names = [e["event"] for e in events]
    assert names[-1] in ("turn_done", "error")
    assert names.count("turn_done") + names.count("error") == 1
    return events


def stream(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any], str]:
    code = cli.main(["--message", *args, "--json-stream"])
    out, err = capsys.readouterr()
    return code, events_of(out), err


def test_a_turn_with_a_tool_call_as_events(
    scripted: Script, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted([['Voy. <TOOL:echo>{"text": "hola"}</TOOL>'], ["Dice ", "hola."]])
    code, events, err = stream(["repite hola"], capsys)
    assert code == 0 and err == ""
    assert [e["event"] for e in events] == [
        "start",
        "text",
        "tool_started",
        "tool_finished",
        "text",
        "text",
        "turn_done",
    ]
    start, first, started, finished, *_, done = events
    assert start["backend"] == "scripted" and start["model"] == "thau-test"
    assert first["text"] == "Voy. "
    assert started == {
        "event": "tool_started",
        "name": "echo",
        "arguments": {"text": "hola"},
        "syntax": "thau",
    }
    assert finished["ok"] is True and finished["result"] == {"echo": "hola"}
    assert done["answer"] == "Dice hola." and done["tool_calls"] == 1
    assert done["timings"]["steps"] == 2 and done["error"] is None
    saved = json.loads(Path(done["conversation"]).read_text("utf-8"))
    assert saved["messages"][-1]["content"] == "Dice hola."


def test_a_malformed_call_and_another_models_format(
    scripted: Script, capsys: pytest.CaptureFixture[str]
) -> None:
    hermes = '<tool_call>{"name": "echo", "arguments": {"text": "q"}}</tool_call>'
    scripted([["<TOOL:echo>{{{not json</TOOL>"], [hermes], ["fin"]])
    code, events, _ = stream(["x"], capsys)
    assert code == 0
    finished = [e for e in events if e["event"] == "tool_finished"]
    assert finished[0]["ok"] is False and "malformed tool call" in finished[0]["error"]
    assert [e["syntax"] for e in events if e["event"] == "tool_started"] == ["hermes"]
    assert finished[1]["result"] == {"echo": "q"}


@pytest.mark.parametrize(
    ("failure", "says", "code"),
    [
        (StreamInterrupted("the stream broke off"), "the stream broke off", 1),
        (ValueError("a bug below"), "unexpected ValueError: a bug below", 1),
        (KeyboardInterrupt(), "interrupted", 130),
    ],
)
def test_a_broken_backend_still_ends_with_an_error_event(
    failure: BaseException,
    says: str,
    code: int,
    scripted: Script,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted([["half an ", "answer", failure]])
    rc, events, err = stream(["x"], capsys)
    assert rc == code
    last = events[-1]
    assert last["event"] == "error" and last["error"] == says
    assert [e["text"] for e in events if e["event"] == "text"] == ["half an ", "answer"]
    assert last["answer"] == "half an answer" and f"error: {says}" in err
    saved = json.loads(Path(last["conversation"]).read_text("utf-8"))
    assert saved["messages"][-1]["content"].endswith("[interrupted]")


def test_a_backend_that_cannot_start_is_an_error_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("THAU_DATA_DIR", str(tmp_path))

    def down(settings: Any) -> Selection:
        raise BackendUnavailable("Ollama is not answering at http://x. Start it.")

    monkeypatch.setattr(session, "create_backend", down)
    rc, events, _ = stream(["x"], capsys)
    assert rc == 1
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["error"] == "Ollama is not answering at http://x. Start it."


@pytest.mark.parametrize(
    "argv",
    [
        ["--json-stream"],
        ["--message", "x", "--json", "--json-stream"],
        ["--run-tool", "echo", "--json-stream"],
    ],
)
def test_json_stream_goes_with_message_only(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert "--json-stream goes with --message" in capsys.readouterr().err


def test_the_schema_rejects_what_the_stream_never_writes() -> None:
    for bad in (
        {"event": "text"},
        {"event": "text", "text": 1},
        {
            "event": "turn_done",
            "error": "x",
            "answer": "",
            "tool_calls": 0,
            "timings": {},
            "conversation": None,
        },
        {"event": "nope"},
    ):
        assert not VALIDATOR.is_valid(bad)


# -- the real command, over HTTP ------------------------------------------------------
def _command(url: str, tmp_path: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THAU_", "XDG_"))}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
    )
    exe = shutil.which("thau-chat", path=str(Path(sys.executable).parent)) or "thau-chat"
    argv = [exe, "--backend", "ollama", "--host", url, "--model", "thau-135m", *args]
    return argv, env


def test_events_arrive_while_the_model_is_still_writing(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    pieces = ["uno ", "dos ", "tres ", "cuatro ", "cinco"]
    fake_ollama.script(Reply(pieces, chunk_delay=0.4))
    argv, env = _command(fake_ollama.url, tmp_path, "-m", "cuenta", "--json-stream")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    running = proc.poll() is None  # the first text arrived before the turn ended
    lines += proc.stdout.readlines()
    assert proc.wait(20) == 0 and running
    events = events_of("".join(lines))
    assert [e["event"] for e in events[:2]] == ["start", "text"]
    assert "".join(e["text"] for e in events if e["event"] == "text") == "".join(pieces)
    assert events[-1]["timings"]["eval_count"] == len(pieces)


def test_a_server_that_dies_mid_reply_ends_the_stream_with_an_error(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    fake_ollama.script(Reply(["partial ", "answer ", "lost"], cut_after=2))
    argv, env = _command(fake_ollama.url, tmp_path, "-m", "hola", "--json-stream")
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and time.monotonic() - started < 30
    events = events_of(done.stdout)
    assert events[-1]["event"] == "error" and "Ollama" in events[-1]["error"]
    assert events[-1]["answer"] == "partial answer"

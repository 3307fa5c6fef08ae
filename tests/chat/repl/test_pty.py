"""The real ``thau-chat`` in a pseudo-terminal (pexpect) against the fake Ollama server.

The test tools reach the child the way a third party's would: a plugin module and a
``*.dist-info`` with an ``entry_points.txt`` in the ``thau.tools`` group, on
``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.servers.base import Reply
from tests.servers.fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[3]
PROMPT = "\x1b[?2004h"
"""prompt-toolkit turns bracketed paste on each time a prompt starts."""
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")
TIMEOUT = 20
PLUGIN = '''"""Test tools published through the thau.tools entry point."""
from tests.scripted import make_registry


def tools():
    return list(make_registry())
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin "installed" in a folder: its module and its dist-info metadata."""
    site = tmp_path_factory.mktemp("site")
    (site / "thau_repl_test_tools.py").write_text(PLUGIN, "utf-8")
    dist = site / "thau_repl_test_tools-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thau-repl-test-tools\nVersion: 1.0\n", "utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[thau.tools]\nrepl_test_tools = thau_repl_test_tools:tools\n", "utf-8"
    )
    return site


class Child:
    """One ``thau-chat`` process in a pty, and where it keeps its data."""

    def __init__(self, proc: pexpect.spawn, data: Path) -> None:
        self.proc = proc
        self.data = data

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """Wait for ``pattern`` on the screen; returns what came before, without escapes.
        On a timeout the error shows the whole screen so far."""
        try:
            self.proc.expect_exact(pattern, timeout=timeout)
        except pexpect.TIMEOUT:
            screen = ANSI.sub("", str(self.proc.before)).replace("\r", "")
            raise AssertionError(f"{pattern!r} never appeared; the screen:\n{screen}") from None
        return ANSI.sub("", str(self.proc.before)).replace("\r", "")

    def prompt(self) -> str:
        return self.expect(PROMPT)

    def say(self, text: str) -> None:
        self.proc.send(text + "\r")

    def finish(self) -> int:
        self.proc.sendcontrol("d")
        self.proc.expect(pexpect.EOF, timeout=TIMEOUT)
        self.proc.close()
        return int(self.proc.exitstatus if self.proc.exitstatus is not None else -1)

    def conversations(self) -> list[dict[str, Any]]:
        folder = self.data / "thau" / "conversations"
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        return [json.loads(p.read_text("utf-8")) for p in paths]


def default_sigint() -> None:
    """In the child: Ctrl-C interrupts, as in a terminal, even when the test run itself was
    started in the background (a shell without job control starts those ignoring SIGINT,
    and the ignoring is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def spawn(
    tmp_path: Path, plugin_dir: Path, no_proxy_for_localhost: None
) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(url: str, *args: str, wait_prompt: bool = True) -> Child:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("THAU_", "XDG_")) and key != "OLLAMA_HOST"
        }
        viewer = tmp_path / "bin"  # a stand-in image viewer that writes down what it opened
        viewer.mkdir(exist_ok=True)
        for name in ("xdg-open", "open"):
            (viewer / name).write_text(f'#!/bin/sh\necho "$1" >> "{tmp_path}/opened"\n')
            (viewer / name).chmod(0o755)
        env.update(
            PATH=os.pathsep.join([str(viewer), env.get("PATH", "")]),
            TERM="xterm-256color",
            COLUMNS="100",
            LINES="30",
            XDG_CONFIG_HOME=str(tmp_path / "config"),
            XDG_DATA_HOME=str(tmp_path / "data"),
            XDG_CACHE_HOME=str(tmp_path / "cache"),
            XDG_RUNTIME_DIR=str(tmp_path / "run"),
            PYTHONPATH=os.pathsep.join([str(plugin_dir), str(ROOT)]),
            PROMPT_TOOLKIT_NO_CPR="1",
            PYTHONUNBUFFERED="1",
        )
        exe = shutil.which("thau-chat", path=str(Path(sys.executable).parent))
        argv = ["--backend", "ollama", "--host", url, "--model", "thau-135m", *args]
        proc = pexpect.spawn(
            exe or "thau-chat",
            argv,
            env=env,
            cwd=str(tmp_path),
            dimensions=(30, 100),
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT,
            preexec_fn=default_sigint,
        )
        child = Child(proc, tmp_path / "data")
        children.append(child)
        if wait_prompt:
            child.prompt()
        return child

    yield start
    for child in children:
        if child.proc.isalive():
            child.proc.terminate(force=True)


def test_streamed_answer_tool_panel_and_approval(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        ["Hello ", "**there**", "!"],
        ['<TOOL:echo>{"text": "ping"}</TOOL>'],
        ["echoed"],
        ['<TOOL:guarded>{"text": "print(2 + 2)"}</TOOL>'],
        ["ran it"],
        ['<TOOL:guarded>{"text": "import shutil"}</TOOL>'],
        ["not run"],
    )
    chat = spawn(fake_ollama.url)
    chat.say("hi")
    assert "Hello there!" in chat.prompt()
    chat.say("echo please")
    shown = chat.prompt()
    assert "tool echo" in shown and "text: ping" in shown
    assert "echo ok" in shown and "echo: ping" in shown and "echoed" in shown
    assert '"echo"' not in shown  # readable, not JSON
    chat.say("run code")
    assert "print(2 + 2)" in chat.expect("Run it? [y/N]")
    chat.say("y")
    assert "approved: true" in chat.prompt()
    chat.say("run more")
    chat.expect("Run it? [y/N]")
    chat.say("n")
    shown = chat.prompt()
    assert "declined" in shown and "not approved" in shown
    assert chat.finish() == 0
    messages = chat.conversations()[-1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "hi",
        "echo please",
        "run code",
        "run more",
    ]


def test_alt_enter_and_paste_send_multiline_messages(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(["one"], ["two"])
    chat = spawn(fake_ollama.url)
    chat.proc.send("line 1\x1b\rline 2\r")
    chat.expect("one")
    chat.prompt()
    chat.proc.send("\x1b[200~pasted a\npasted b\x1b[201~\r")
    chat.expect("two")
    chat.prompt()
    assert chat.finish() == 0
    users = [m["content"] for m in chat.conversations()[-1]["messages"] if m["role"] == "user"]
    assert users == ["line 1\nline 2", "pasted a\npasted b"]
    sent = [m["content"] for m in fake_ollama.chat_requests[0]["messages"]]
    assert sent[-1] == "line 1\nline 2"


def test_ctrl_c_stops_a_slow_answer_and_keeps_both_turns(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    slow = Reply(["slow ", "start ", *["more "] * 50], chunk_delay=0.3)
    fake_ollama.script(slow, ["quick answer"])
    chat = spawn(fake_ollama.url)
    chat.say("tell me slowly")
    chat.expect("slow start")  # the reply itself ("start" alone also matches an error's "start it")
    chat.proc.sendcontrol("c")
    chat.expect("[interrupted]")
    chat.prompt()
    chat.say("and now?")
    chat.expect("quick answer")
    chat.prompt()
    assert chat.finish() == 0
    messages = chat.conversations()[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"].startswith("slow start")
    assert messages[1]["content"].endswith("[interrupted]")
    assert messages[3]["content"] == "quick answer"


def test_ctrl_c_at_the_prompt_then_ctrl_d(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    chat = spawn(fake_ollama.url)
    chat.proc.send("half typed")
    chat.proc.sendcontrol("c")
    chat.expect("Ctrl-D or /exit leaves")
    chat.prompt()
    chat.proc.sendcontrol("c")
    chat.expect("Ctrl-D or /exit leaves")
    chat.prompt()
    assert chat.proc.isalive()
    assert chat.finish() == 0
    assert fake_ollama.chat_requests == []


def test_server_dies_mid_stream_and_a_500(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(["partial ", "answer ", "lost"], cut_after=2),
        Reply(status=500, error="the GPU caught fire"),
        ["back again"],
    )
    chat = spawn(fake_ollama.url)
    chat.say("first")
    assert "error:" in chat.prompt()
    chat.say("second")
    assert "the GPU caught fire" in chat.prompt()
    chat.say("third")
    assert "back again" in chat.prompt()
    assert chat.finish() == 0
    messages = chat.conversations()[-1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "first",
        "second",
        "third",
    ]
    assert messages[-1]["content"] == "back again"


def test_server_down_from_the_start(spawn: Callable[..., Child], dead_url: str) -> None:
    chat = spawn(dead_url)
    chat.say("anyone there?")
    shown = chat.prompt()
    assert "error:" in shown and dead_url.split("//")[1] in shown.replace("\r\n", "")
    chat.say("/model")
    assert "thau-135m" in chat.prompt()
    chat.say("/exit")
    chat.proc.expect(pexpect.EOF, timeout=TIMEOUT)
    chat.proc.close()
    assert chat.proc.exitstatus == 0
    assert chat.conversations()[-1]["messages"][0]["content"] == "anyone there?"


def test_bad_load_exits_1(spawn: Callable[..., Child], fake_ollama: FakeOllama) -> None:
    chat = spawn(fake_ollama.url, "--load", "no-such-id", wait_prompt=False)
    chat.expect("No conversation 'no-such-id'")
    chat.proc.expect(pexpect.EOF, timeout=TIMEOUT)
    chat.proc.close()
    assert chat.proc.exitstatus == 1


def test_every_slash_command(
    spawn: Callable[..., Child], fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    fake_ollama.add_model("other-model:latest", capabilities=["completion"])
    fake_ollama.script(
        ["first answer"],
        ["retried answer"],
        [f'<TOOL:echo>{{"text": "{image}"}}</TOOL>'],
        ["from the other model"],
    )
    chat = spawn(fake_ollama.url)
    chat.say("/help")
    assert "/model [name]" in chat.prompt()
    chat.say("/tools")
    shown = chat.prompt()
    assert "echo(text, times=1)" in shown and "guarded(text, times=1)" in shown
    chat.say("/nope")
    assert "unknown command /nope" in chat.prompt()
    chat.say("/system Speak briefly.")
    chat.prompt()
    chat.say("/system")
    assert "Speak briefly." in chat.prompt()
    chat.say("draw")
    assert "first answer" in chat.prompt()
    chat.say("/retry")
    assert "retried answer" in chat.prompt()
    chat.say("/model")
    assert "thau-135m" in chat.prompt()
    chat.say("/model other-model")
    assert "other-model" in chat.prompt()
    chat.say("/verbose")
    assert "Timings and tool results' JSON after each answer: on." in chat.prompt()
    chat.say("and you?")
    shown = chat.prompt()
    assert "from the other model" in shown and "tokens/s" in shown
    assert fake_ollama.last_chat["model"] == "other-model"
    assert fake_ollama.last_chat["messages"][0]["content"] == "Speak briefly."
    chat.say("/open")
    assert f"Opened {image}" in chat.prompt().replace("\n", "")
    deadline = time.monotonic() + TIMEOUT
    while not (tmp_path / "opened").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "opened").read_text().split() == [str(image)]
    saved = tmp_path / "copy.json"
    chat.say(f"/save {saved}")
    chat.prompt()
    conv_id = json.loads(saved.read_text("utf-8"))["id"]
    chat.say("/clear")
    chat.prompt()
    chat.say("/load")
    assert conv_id in chat.prompt()
    chat.say(f"/load {conv_id}")
    assert f"Loaded {conv_id}" in chat.prompt()
    chat.proc.send("/he")
    time.sleep(0.5)
    chat.proc.send("\t")
    time.sleep(0.5)
    chat.proc.send("\r")
    assert "/retry" in chat.prompt()
    chat.say("limpiar")
    chat.prompt()
    chat.say("salir")
    chat.proc.expect(pexpect.EOF, timeout=TIMEOUT)
    chat.proc.close()
    assert chat.proc.exitstatus == 0
    history = (chat.data / "thau" / "history").read_text("utf-8")
    assert "+/model other-model" in history


def test_model_not_found_then_switch_to_one_that_exists(
    spawn: Callable[..., Child], fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(["found it"])
    chat = spawn(fake_ollama.url, "--model", "missing-model")
    chat.say("hello?")
    shown = chat.prompt()
    assert "error:" in shown and "missing-model" in shown
    chat.say("/model thau-135m")
    chat.prompt()
    chat.say("hello again")
    assert "found it" in chat.prompt()
    assert chat.finish() == 0
    contents = [m["content"] for m in chat.conversations()[-1]["messages"]]
    assert contents == ["hello?", "hello again", "found it"]


def test_piped_stdin_is_scriptable(
    tmp_path: Path, plugin_dir: Path, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(['<TOOL:guarded>{"text": "print(1)"}</TOOL>'], ["ran"], ["bye"])
    env = dict(
        os.environ,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PYTHONPATH=os.pathsep.join([str(plugin_dir), str(ROOT)]),
        COLUMNS="100",
    )
    exe = shutil.which("thau-chat", path=str(Path(sys.executable).parent)) or "thau-chat"
    done = subprocess.run(
        [exe, "--backend", "ollama", "--host", fake_ollama.url, "--model", "thau-135m"],
        input="run it\ny\nthanks\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "Run it? [y/N] y" in done.stdout
    assert "approved: true" in done.stdout and "bye" in done.stdout
    assert "\x1b[" not in done.stdout  # no escapes when the output is not a terminal
    saved = json.loads(
        next((tmp_path / "data" / "thau" / "conversations").glob("*.json")).read_text()
    )
    assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == ["run it", "thanks"]

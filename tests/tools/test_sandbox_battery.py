"""Hostile code against both sandbox paths: each attack is contained, this process lives on,
and the result says what happened."""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thau.tools.sandbox import Sandbox, SandboxLimits, SandboxResult, bwrap_problem

TIMEOUT_S = 2.5


@pytest.fixture(params=["bwrap", "fallback"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    if request.param == "bwrap":
        problem = bwrap_problem()
        assert problem is None, f"this half of the battery needs a working bubblewrap: {problem}"
    return Sandbox(request.param, SandboxLimits(timeout_s=TIMEOUT_S, memory_mb=512))


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A private directory outside /tmp (bwrap gives the sandbox its own /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="thau-outside-", dir="/var/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)  # only the directory this fixture made


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def leftovers(result: SandboxResult) -> list[int]:
    """Processes still carrying the run's id on their command line (children inherit it)."""
    token = result.run_id.encode()
    assert token
    deadline = time.monotonic() + 1.0
    while True:
        found = [
            int(entry.name)
            for entry in os.scandir("/proc")
            if entry.name.isdigit() and token in cmdline(int(entry.name))
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_ordinary_code_runs_with_threads_and_a_private_work_dir(sandbox: Sandbox) -> None:
    code = (
        "import os\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    print(sum(pool.map(lambda n: n * n, range(10))))\n"
        "with open('notes.txt', 'w') as fh:\n"
        "    fh.write('kept')\n"
        "print(open('notes.txt').read(), os.environ['HOME'] == os.getcwd())\n"
    )
    result = sandbox.run(code)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["285", "kept", "True"]
    assert result.sandbox == sandbox.requested
    assert (result.warning is None) == (sandbox.requested == "bwrap")


def test_environment_is_cleared(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(8)
    monkeypatch.setenv("THAU_TEST_SECRET", secret)
    result = sandbox.run("import os\nprint(sorted(os.environ.items()))\n")
    assert result.exit_code == 0
    assert secret not in result.stdout
    assert "THAU_TEST_SECRET" not in result.stdout


def test_fork_bomb_is_refused(sandbox: Sandbox) -> None:
    code = (
        "import ctypes, os\n"
        "print('libc fork:', ctypes.CDLL(None).fork())\n"  # around Python, straight to libc
        "while True:\n"
        "    os.fork()\n"
    )
    result = sandbox.run(code)
    assert not result.timed_out
    assert result.exit_code == 1
    assert "libc fork: -1" in result.stdout
    assert "PermissionError: [Errno 1] Operation not permitted" in result.stderr
    assert leftovers(result) == []


def test_infinite_loop_is_killed_at_the_timeout(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass\n")
    assert result.timed_out
    assert result.signal == "SIGKILL"
    assert result.exit_code is None
    assert TIMEOUT_S <= result.duration_s < TIMEOUT_S + 2
    assert leftovers(result) == []


def test_allocating_4_gb_fails_with_memory_error(sandbox: Sandbox) -> None:
    result = sandbox.run("block = bytearray(4 * 1024**3)\nprint('allocated', len(block))\n")
    assert not result.timed_out
    assert result.exit_code == 1
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


def test_writing_outside_the_work_dir_fails(sandbox: Sandbox, outside_dir: Path) -> None:
    name = f"thau-pwned-{secrets.token_hex(6)}"
    targets = [outside_dir / name, Path.home() / name, Path("/") / name, Path("/run") / name]
    code = (
        "open('inside.txt', 'w').write('fine')\n"
        "print('inside ok')\n"
        f"for target in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(target, 'w').write('pwned')\n"
        "        print('WRITTEN', target)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__, exc.strerror)\n"
    )
    try:
        result = sandbox.run(code)
        written = [t for t in targets if t.exists()]
    finally:
        for target in targets:
            if target.is_file():
                target.unlink()
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "inside ok"
    assert len(lines) == 1 + len(targets)
    assert all(line.startswith("refused") for line in lines[1:]), lines
    assert written == []


def test_home_directory_is_out_of_reach(
    sandbox: Sandbox, outside_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_hex(16)
    (outside_dir / "secret.txt").write_text(token)
    monkeypatch.setenv("HOME", str(outside_dir))
    code = (
        "import os\n"
        f"home = {str(outside_dir)!r}\n"
        "try:\n"
        "    print(os.listdir(home))\n"
        "except OSError as exc:\n"
        "    print('listing refused:', type(exc).__name__)\n"
        "print(open(os.path.join(home, 'secret.txt')).read())\n"
    )
    result = sandbox.run(code)
    assert result.exit_code == 1
    assert token not in result.stdout + result.stderr
    assert "listing refused" in result.stdout or result.stdout.startswith("[]")
    assert "FileNotFoundError" in result.stderr or "PermissionError" in result.stderr


def test_no_connection_to_a_local_server(sandbox: Sandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
            "print('connected')\n"
        )
        result = sandbox.run(code)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever knocked
    assert result.exit_code == 1
    assert "connected" not in result.stdout
    assert "PermissionError" in result.stderr or "OSError" in result.stderr


def test_100_mb_of_output_is_cut_to_head_and_tail(sandbox: Sandbox) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = (
        "import sys\n"
        "sys.stdout.write('START\\n')\n"
        "chunk = 'x' * 999_999 + '\\n'\n"
        "for _ in range(100):\n"
        "    sys.stdout.write(chunk)\n"
        "sys.stdout.write('END\\n')\n"
    )
    result = sandbox.run(code)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert result.exit_code == 0
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout_bytes == 100_000_000 + len("START\n") + len("END\n")
    assert result.stdout.startswith("START\nxxx")
    assert result.stdout.endswith("xxx\nEND\n")
    assert "bytes omitted" in result.stdout
    assert len(result.stdout) < sandbox.limits.output_bytes + 100
    assert grown_kib < 40 * 1024  # read as it came, never held whole


def test_sleeping_forever_is_killed(sandbox: Sandbox) -> None:
    result = sandbox.run("import time\nprint('sleeping', flush=True)\ntime.sleep(10**6)\n")
    assert result.timed_out
    assert result.signal == "SIGKILL"
    assert result.stdout == "sleeping\n"
    assert leftovers(result) == []


def test_a_child_cannot_outlive_the_run(sandbox: Sandbox) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "print('daemon started')\n"
    )
    result = sandbox.run(code)
    assert "daemon started" not in result.stdout
    assert "Operation not permitted" in result.stderr
    assert leftovers(result) == []


def test_killing_its_parent_fails(sandbox: Sandbox) -> None:
    code = "import os\nos.kill(os.getppid(), 9)\nprint('parent killed')\n"
    result = sandbox.run(code)
    os.kill(os.getpid(), 0)  # still here
    assert result.exit_code == 1
    assert "parent killed" not in result.stdout
    assert "PermissionError: [Errno 1] Operation not permitted" in result.stderr
    assert leftovers(result) == []


def test_signals_to_itself_still_work(sandbox: Sandbox) -> None:
    result = sandbox.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert result.signal == "SIGTERM"
    assert result.exit_code is None and not result.timed_out


def test_a_huge_file_is_refused(sandbox: Sandbox) -> None:
    code = (
        "block = b'z' * (1024 * 1024)\n"
        "with open('big.bin', 'wb') as fh:\n"
        "    for _ in range(200):\n"
        "        fh.write(block)\n"
    )
    result = sandbox.run(code)
    assert result.exit_code == 1
    assert "File too large" in result.stderr or "No space left" in result.stderr


def test_bwrap_bounds_the_space_of_its_work_dir() -> None:
    assert bwrap_problem() is None
    sandbox = Sandbox("bwrap", SandboxLimits(timeout_s=10, disk_mb=8))
    code = (
        "block = b'z' * (1024 * 1024)\n"
        "for n in range(32):\n"
        "    with open(f'part{n}.bin', 'wb') as fh:\n"
        "        fh.write(block)\n"
        "    print(n, flush=True)\n"
    )
    result = sandbox.run(code)
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert 4 <= len(result.stdout.split()) <= 8  # about 8 MiB written, not 32


def test_closing_its_output_early_is_not_a_kill(sandbox: Sandbox) -> None:
    code = (
        "import os, time\n"
        "print('bye', flush=True)\n"
        "os.close(1)\n"
        "os.close(2)\n"
        "time.sleep(0.7)\n"
        "raise SystemExit(4)\n"
    )
    result = sandbox.run(code)
    assert result.stdout == "bye\n"
    assert result.exit_code == 4
    assert not result.timed_out and result.signal is None
    assert result.duration_s >= 0.7


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for an init that may never reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_run_dies_with_the_process_that_started_it(sandbox: Sandbox, tmp_path: Path) -> None:
    """Kill the process that started a run: every process of the run dies with it.

    The starter's work dirs go under ``tmp_path`` (``TMPDIR``), so pytest cleans up what the
    killed starter could not; this test deletes nothing itself.
    """
    starter = (
        "from thau.tools.sandbox import Sandbox, SandboxLimits\n"
        f"Sandbox({sandbox.requested!r}, SandboxLimits(timeout_s=60)).run("
        "'import time\\ntime.sleep(60)')\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    runner = subprocess.Popen([sys.executable, "-c", starter], env=env, cwd=tmp_path)

    def run_processes() -> set[int]:  # the run's, not the bwrap probes the starter makes
        return {pid for pid in descendants(runner.pid) if b'"script"' in cmdline(pid)}

    wanted = 3 if sandbox.requested == "bwrap" else 1  # bwrap, its pid 1, python
    deadline = time.monotonic() + 20
    while len(kids := run_processes()) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) >= wanted
    time.sleep(1.0)  # let the guard finish
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in kids if alive(pid)] == []
